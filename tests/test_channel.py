"""The pipe between paste workers and the main process: messages arrive whole and equal,
large buffers included, and a worker's death is an error, not a hang."""

import multiprocessing
import os

import numpy as np
import pytest

from synthgen.channel import Channel
from synthgen.engine import _WorkerPool
from synthgen.writers import StagedSample

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="sends from a forked process")

CONTEXT = multiprocessing.get_context("fork")


def messages() -> list[object]:
    rng = np.random.default_rng(0)
    staged = [StagedSample(i, f"{i:010d}", 2, 1, rng.bytes(30_000 + i), {"index": i}) for i in range(40)]
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    mask = rng.random((480, 640)) > 0.5
    return [
        (0, staged, None),  # a batch of encoded samples: about 1.2 MB, more than the pipe holds
        (1, [image, mask, image[:, ::2]], None),  # arrays, one not contiguous (pickled in band)
        (2, [StagedSample(0, "0", 0, 0, b"")], None),  # an empty buffer
        (3, None, "a traceback"),
    ]


def send_all(channel: Channel) -> None:
    for message in messages():
        channel.send(message)


def test_messages_arrive_whole_and_equal():
    channel = Channel(CONTEXT)
    sender = CONTEXT.Process(target=send_all, args=(channel,))
    sender.start()
    channel.close_writer()
    try:
        for expected in messages():
            got = channel.receive()
            assert got[0] == expected[0]
            if got[0] == 1:
                for g, e in zip(got[1], expected[1]):
                    np.testing.assert_array_equal(g, e)
                    assert g.dtype == e.dtype and g.flags.writeable
            else:
                assert got == expected
                if got[0] == 0:
                    assert all(bytes(g.payload) == e.payload for g, e in zip(got[1], expected[1]))
        with pytest.raises(EOFError):  # the sender is done and gone
            channel.receive()
    finally:
        sender.join()
        channel.close()


def die(tasks, results, *args) -> None:
    os._exit(3)


def test_a_worker_that_dies_is_reported(monkeypatch):
    monkeypatch.setattr("synthgen.engine._worker_main", die)
    with _WorkerPool(2, None, None, None) as pool:
        pool.submit(0, [0, 1])
        with pytest.raises(RuntimeError, match="died unexpectedly"):
            for _ in range(50):  # 10 s at most; the pipe ends as soon as the worker is gone
                pool.next_result(timeout=0.2)
