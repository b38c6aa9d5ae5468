"""What a generator file is (by its bytes, never by running it) and how to read it safely.

Published GAN checkpoints are Python pickles, and a pickle is a program: unpickling may call any
importable function. NVIDIA's PyTorch pickles go further and carry their network source, which
NVlabs' loader ``exec``s. Nothing here runs code from a file:

* :func:`sniff` reads the first bytes and walks the pickle's opcodes (``pickletools.genops``, a
  parser) to name the format.
* :class:`RestrictedUnpickler` resolves only an allow-list of globals (tensor and array rebuilders,
  ``OrderedDict``); NVlabs' ``torch_utils.persistence._reconstruct_persistent_obj`` records become
  :class:`PersistentRecord` data (the embedded ``module_src`` is kept as text, never executed), and
  TensorFlow ``dnnlib.tflib.network.Network`` objects become :class:`TFNetwork` data. Any other
  global refuses the file before it can be called.
* Torch storages inside NVlabs pickles and whole ``torch.save`` checkpoints are read with
  ``torch.load(weights_only=True)``, torch's own allow-listing unpickler.
"""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthgen.errors import InputError

NVLABS_PICKLE = "nvlabs-pickle"  # stylegan2-ada-pytorch / stylegan3: dict with G_ema
TF_PICKLE = "tf-pickle"  # NVlabs TensorFlow (StyleGAN, StyleGAN2): tuple (G, D, Gs) of Networks
TORCH_CHECKPOINT = "torch-checkpoint"  # torch.save: zip archive or the legacy pickle stream

_PERSISTENT = ("torch_utils.persistence", "_reconstruct_persistent_obj")
_TF_NETWORK = ("dnnlib.tflib.network", "Network")
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first object of a non-zip torch.save stream

EXPECTED = ("expected a generator checkpoint: an NVIDIA StyleGAN2 network pickle (.pkl from "
            "stylegan2-ada-pytorch or the TensorFlow StyleGAN/StyleGAN2 releases) or a PyTorch checkpoint "
            "(.pt/.pth, e.g. rosinality stylegan2-pytorch)")


@dataclass(frozen=True)
class FileKind:
    """What :func:`sniff` found: ``kind`` is one of the module's format constants."""

    kind: str
    description: str


# ------------------------------------------------------------------------------------------------
# Sniffing


def _describe_foreign(head: bytes) -> str:
    """A short name for bytes that are not a checkpoint, for the error message."""
    signatures = [
        (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
        (b"\x1f\x8b", "a gzip archive"), (b"\x89HDF", "an HDF5 file (Keras/TF weights?)"),
        (b"BZh", "a bzip2 archive"), (b"7z\xbc\xaf", "a 7-zip archive"), (b"%PDF", "a PDF document"),
        (b"\x93NUMPY", "a NumPy .npy array"), (b"version https://git-lfs", "a Git LFS pointer (the file was "
                                                 "not downloaded, only its pointer)"),
        (b"<!DOCTYPE", "an HTML page (a download error page?)"), (b"<html", "an HTML page (a download error page?)"),
    ]
    for magic, name in signatures:
        if head.startswith(magic) or head.lower().startswith(magic.lower()):
            return name
    if not head:
        return "an empty file"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return f"unrecognised binary data (first bytes {head[:8].hex(' ')})"


def _pickle_globals(stream, limit: int = 4000):
    """Yield the (module, name) globals a pickle refers to, in order, from its opcodes alone.

    Tracks the strings on the memo so that ``STACK_GLOBAL``'s operands are known even when they
    are fetched with ``BINGET``. Stops after ``limit`` opcodes; a truncated stream just ends.
    """
    memo: dict[int, Any] = {}
    recent: list[Any] = []  # the last two values pushed (strings or None)
    try:
        for count, (op, arg, _pos) in enumerate(pickletools.genops(stream)):
            if count >= limit:
                return
            name = op.name
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                recent = (recent + [arg])[-2:]
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                recent = (recent + [memo.get(int(arg))])[-2:]
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = recent[-1] if recent else None
            elif name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                yield module, attr
                recent = []
            elif name == "STACK_GLOBAL":
                if len(recent) == 2 and all(isinstance(x, str) for x in recent):
                    yield recent[0], recent[1]
                recent = []
            elif name in ("LONG1", "LONG4") and arg == _TORCH_LEGACY_MAGIC:
                yield "torch.serialization", "MAGIC_NUMBER"
            elif name != "FRAME":
                recent = (recent + [None])[-2:]
    except (ValueError, EOFError):
        return


def sniff(path: str | Path) -> FileKind:
    """Name the format of ``path`` from its content (never its suffix, never by running it).

    Raises :class:`InputError` saying what the file looks like when it is no generator checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; {EXPECTED}.")
    with open(path, "rb") as f:
        head = f.read(64)
        if head.startswith(b"PK\x03\x04"):
            try:
                names = zipfile.ZipFile(path).namelist()
            except zipfile.BadZipFile:
                raise InputError(f"{path}: a damaged or truncated zip archive (a torch.save checkpoint "
                                 "whose download was cut short?); download it again.") from None
            if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
                return FileKind(TORCH_CHECKPOINT, "a PyTorch checkpoint (torch.save zip archive)")
            raise InputError(f"{path}: a zip archive that is not a PyTorch checkpoint (no data.pkl inside); "
                             f"{EXPECTED}.")
        if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
            f.seek(0)
            first = next(_pickle_globals(f), None)
            if first == _PERSISTENT:
                return FileKind(NVLABS_PICKLE, "an NVIDIA PyTorch network pickle (stylegan2-ada-pytorch / stylegan3)")
            if first == _TF_NETWORK:
                return FileKind(TF_PICKLE, "an NVIDIA TensorFlow network pickle (dnnlib.tflib Networks)")
            if first == ("torch.serialization", "MAGIC_NUMBER"):
                return FileKind(TORCH_CHECKPOINT, "a PyTorch checkpoint (legacy torch.save stream)")
            found = (f"a Python pickle whose first class is {first[0]}.{first[1]}" if first
                     else "a Python pickle with no network in it")
            raise InputError(f"{path}: {found}; {EXPECTED}.")
    raise InputError(f"{path}: {_describe_foreign(head)}; {EXPECTED}.")


# ------------------------------------------------------------------------------------------------
# The restricted unpickler


@dataclass
class PersistentRecord:
    """An NVlabs ``@persistent_class`` object as data: its class name and pickled ``__dict__``."""

    class_name: str
    state: dict
    module_src: str = field(default="", repr=False)  # kept as text, never executed


@dataclass
class TFNetwork:
    """A ``dnnlib.tflib.network.Network`` as data (what its ``__getstate__`` wrote)."""

    version: int = 0
    name: str = ""
    static_kwargs: dict = field(default_factory=dict)
    components: dict = field(default_factory=dict)
    build_func_name: str = ""
    variables: list = field(default_factory=list)

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("a TensorFlow Network whose state is not a dict")
        self.version = int(state.get("version", 0))
        self.name = str(state.get("name", ""))
        self.static_kwargs = dict(state.get("static_kwargs") or {})
        self.components = dict(state.get("components") or {})
        self.build_func_name = str(state.get("build_func_name", ""))
        self.variables = list(state.get("variables") or [])

    def all_variables(self) -> dict[str, np.ndarray]:
        """Own and components' variables by full name (``mapping/Dense0/weight``)."""
        out: dict[str, np.ndarray] = {}

        def walk(prefix: str, net: TFNetwork) -> None:
            for name, value in net.variables:
                out[prefix + name] = value
            for name, comp in net.components.items():
                if isinstance(comp, TFNetwork):
                    walk(prefix + name + "/", comp)

        walk("", self)
        return out


class AttrDict(dict):
    """``dnnlib.EasyDict`` read as a plain dict with attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _persistent_record(meta) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise pickle.UnpicklingError("a persistent-object record without a class state")
    return PersistentRecord(str(meta.get("class_name", "")), meta["state"], str(meta.get("module_src", "")))


def _storage_from_bytes(data: bytes):
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import torch
    import torch._utils

    allowed = {
        _PERSISTENT: _persistent_record,
        _TF_NETWORK: TFNetwork,
        ("dnnlib.util", "EasyDict"): AttrDict,
        ("dnnlib", "EasyDict"): AttrDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    if hasattr(torch._utils, "_rebuild_parameter_with_state"):
        allowed[("torch._utils", "_rebuild_parameter_with_state")] = torch._utils._rebuild_parameter_with_state
    try:  # numpy 2 (pickles written by numpy 1 name numpy.core, numpy 2 ones numpy._core)
        from numpy._core import multiarray
    except ImportError:  # numpy 1
        from numpy.core import multiarray
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "scalar")] = multiarray.scalar
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
    return allowed


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a global that is not on the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :func:`_allowed_globals`; anything else raises :class:`RefusedGlobal`."""

    def __init__(self, file) -> None:
        super().__init__(file)
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("a persistent id (torch.save storages belong in a .pt zip archive)")


def load_pickle(path: str | Path, what: str) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`, turning every failure into an
    :class:`InputError` that says what was found. ``what`` names the expected content."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f).load()
    except RefusedGlobal as refused:
        raise InputError(
            f"{path}: refused. The pickle refers to {refused}, which {what} never contains; loading it "
            "could run code hidden in the file, so synthgen did not. Nothing from the file was executed. "
            "Use the official release of the model, or a checkpoint you made yourself.") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            RuntimeError, OSError, MemoryError) as err:
        reason = "it ends early (truncated: an interrupted download?)" if isinstance(err, EOFError) \
            or "truncated" in str(err).lower() or "ran out of input" in str(err).lower() \
            else f"it is damaged ({type(err).__name__}: {err})"
        raise InputError(f"{path}: {what} could not be read: {reason}. Download the file again.") from None


# ------------------------------------------------------------------------------------------------
# Readers of each format


def module_state(record: PersistentRecord, prefix: str = "") -> dict:
    """Flat ``state_dict``-style mapping of an NVlabs module record: parameters and persistent
    buffers of it and its submodules, keyed ``sub.sub.name``."""
    out = {}
    state = record.state
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is not None and name not in (state.get("_non_persistent_buffers_set") or ()):
                out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PersistentRecord):
            out.update(module_state(child, f"{prefix}{name}."))
    return out


def child_names(record: PersistentRecord) -> list[str]:
    return list((record.state.get("_modules") or {}).keys())


def read_nvlabs_pickle(path: str | Path, key: str = "G_ema") -> PersistentRecord:
    """The ``key`` network record of an NVlabs PyTorch network pickle (a dict of networks)."""
    data = load_pickle(path, "an NVIDIA PyTorch network pickle")
    if not isinstance(data, dict) or not isinstance(data.get(key), PersistentRecord):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{path}: an NVIDIA network pickle without a '{key}' network (found {found}); "
                         f"expected the dict a stylegan2-ada-pytorch / stylegan3 training run writes.")
    return data[key]


def read_tf_pickle(path: str | Path) -> tuple[TFNetwork, ...]:
    """The networks of an NVlabs TensorFlow pickle: ``(G, D, Gs)``; use ``Gs`` for sampling."""
    data = load_pickle(path, "an NVIDIA TensorFlow network pickle")
    if not (isinstance(data, tuple) and data and all(isinstance(n, TFNetwork) for n in data)):
        raise InputError(f"{path}: an NVIDIA TensorFlow pickle that is not a tuple of networks (found "
                         f"{type(data).__name__}); expected (G, D, Gs) as the official releases hold.")
    return data


def read_torch_checkpoint(path: str | Path) -> Any:
    """A ``torch.save`` checkpoint through ``torch.load(weights_only=True)``, allowing also
    ``argparse.Namespace`` (rosinality's training ``args``)."""
    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(
            f"{path}: refused. The checkpoint refers to objects a generator checkpoint never contains "
            f"({str(err).splitlines()[0][:200]}); loading it could run code hidden in the file, so synthgen "
            "did not. Use the official release of the model, or a checkpoint you made yourself.") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: the PyTorch checkpoint could not be read: it is truncated or damaged "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:200]}). Download it again.") from None
