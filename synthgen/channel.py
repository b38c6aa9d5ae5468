"""A one-way pipe for large messages between processes: pickle protocol 5 with the big buffers
(JPEG bytes, image arrays) sent out of band.

The paste workers send batches of encoded samples (about 1 MB for 32 JPEGs at 320x320) to the
main process. ``multiprocessing.Queue`` pickles such a batch into one growing buffer, sends it
from a feeder thread through a 64 KB pipe, and the reader collects the chunks in a ``BytesIO``
and unpickles a copy of every JPEG. Here the pickle holds only the small part of a message: the
sender writes it and the buffers it refers to with ``os.writev``, straight from the objects'
memory, into a pipe enlarged to hold a whole batch, and the receiver reads each buffer once,
into its own ``bytearray``, which the unpickled object then uses (a ``memoryview`` for a
:class:`~synthgen.writers.StagedSample` payload, the array's memory for NumPy).

A message is ``<header><buffer sizes><pickle><buffers...>``, the header being the pickle's
length and the number of buffers (two little-endian uint64).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
from multiprocessing.context import BaseContext

_HEADER = struct.Struct("<QQ")
#: Linux lets anyone grow a pipe to 1 MiB (/proc/sys/fs/pipe-max-size): a whole batch of
#: encoded samples, written in one call while the reader is busy, with no wake-up per 64 KB.
_PIPE_BYTES = 1 << 20
_MAX_VECTORS = 1024  # IOV_MAX: the most buffers one writev/readv takes


class Channel:
    """One pipe: :meth:`send` in the process that writes, :meth:`receive` in the one that
    reads. Create it before starting the writer process, then :meth:`close_writer` in the
    reader, so that the writer's death ends the pipe (EOF) instead of leaving the reader
    waiting. Picklable for process start (its ends are ``multiprocessing`` connections)."""

    def __init__(self, context: BaseContext) -> None:
        self._reader, self._writer = context.Pipe(duplex=False)
        with contextlib.suppress(AttributeError, OSError):  # not Linux, or the limit was lowered
            import fcntl

            fcntl.fcntl(self._writer.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)

    def fileno(self) -> int:
        """The read end (for :func:`multiprocessing.connection.wait`)."""
        return self._reader.fileno()

    def send(self, message: object) -> None:
        """Write ``message`` whole. Blocks while the pipe is full."""
        buffers: list[pickle.PickleBuffer] = []
        body = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
        raws = [buffer.raw() for buffer in buffers]
        head = _HEADER.pack(len(body), len(raws)) + struct.pack(f"<{len(raws)}Q", *(r.nbytes for r in raws))
        _write_all(self._writer.fileno(), [memoryview(head), memoryview(body), *raws])

    def receive(self) -> object:
        """The next message; blocks until all of it has arrived. Raises :class:`EOFError` when
        the writer closed the pipe (or died) before a whole message."""
        fd = self._reader.fileno()
        body_size, count = _HEADER.unpack(_read_exactly(fd, _HEADER.size))
        sizes_and_body = _read_exactly(fd, 8 * count + body_size)
        sizes = struct.unpack_from(f"<{count}Q", sizes_and_body)
        buffers = [bytearray(size) for size in sizes]
        _read_all(fd, [memoryview(b) for b in buffers])
        return pickle.loads(memoryview(sizes_and_body)[8 * count :], buffers=buffers)

    def close_writer(self) -> None:
        self._writer.close()

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


def _write_all(fd: int, views: list[memoryview]) -> None:
    views = [v for v in views if v.nbytes]
    while views:
        _consume(views, os.writev(fd, views[:_MAX_VECTORS]))


def _read_all(fd: int, views: list[memoryview]) -> None:
    views = [v for v in views if v.nbytes]
    while views:
        got = os.readv(fd, views[:_MAX_VECTORS])
        if got == 0:
            raise EOFError("the writing process closed the pipe in the middle of a message")
        _consume(views, got)


def _read_exactly(fd: int, size: int) -> bytearray:
    data = bytearray(size)
    _read_all(fd, [memoryview(data)])
    return data


def _consume(views: list[memoryview], done: int) -> None:
    """Drop the first ``done`` bytes of ``views`` (a partial write or read), in place."""
    while done and done >= views[0].nbytes:
        done -= views.pop(0).nbytes
    if done:
        views[0] = views[0][done:]
