"""Reading PyTorch checkpoint files safely, with errors that say what a file is.

:func:`load_checkpoint` is the one way synthgen opens a ``.pt``/``.pth`` file (detector
checkpoints, ImageNet backbones, segmenter and generator weights). It never executes code from
the file: before torch sees it, the file's container is sniffed and its pickle is scanned
opcode by opcode (:mod:`pickletools`, which decodes without running anything) for the Python
objects it would import. A file that is not a PyTorch file, a pickle that wants to import
something other than tensors and plain containers, a folder, or a missing file each get a
message naming what was found and what was expected; torch's own advice for such files (to
load them with its unsafe mode) never reaches the user, nor do its warnings.
"""

from __future__ import annotations

import io
import pickletools
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable

from synthgen.errors import InputError

# Module prefixes of the tools whose pickled checkpoints users most often mix up with ours.
_TOOLS = {
    "ultralytics": "an Ultralytics YOLO checkpoint",
    "models.yolo": "a YOLOv5 checkpoint",
    "models.common": "a YOLOv5 checkpoint",
    "pytorch_lightning": "a PyTorch Lightning checkpoint",
    "lightning": "a PyTorch Lightning checkpoint",
    "mmdet": "an MMDetection checkpoint",
    "mmengine": "an OpenMMLab checkpoint",
    "detectron2": "a Detectron2 checkpoint",
    "timm": "a timm model",
    "dnnlib": "a StyleGAN (NVlabs) network pickle",
    "torch_utils": "a StyleGAN (NVlabs) network pickle",
    "argparse": "a checkpoint that stores its argparse options",
}
# Magic bytes of weight files of other frameworks.
_FOREIGN_MAGIC = {
    b"\x89HDF\r\n\x1a\n": "an HDF5 file (a Keras / TensorFlow .h5 model?)",
    b"GGUF": "a GGUF file (llama.cpp)",
    b"PK\x03\x04": "a damaged or truncated zip archive (a PyTorch file copied in part?)",
}
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of torch's legacy (pre-zip) format
_LEGACY_PICKLES = 4  # magic number, protocol version, system info, then the object itself


def check_checkpoint_file(path: str | Path, what: str = "a PyTorch checkpoint") -> Path:
    """``path`` as a Path when it names an existing file; InputError saying it is a folder or
    missing otherwise (a cheap check that reads nothing, for commands that list every problem)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; expected {what} (a file, e.g. best.pt)")
    if not path.exists():
        raise InputError(f"{path} does not exist; expected {what}")
    return path


def load_checkpoint(path: str | Path, what: str = "a PyTorch checkpoint", allowed_globals: Iterable[Any] = ()) -> Any:
    """The object stored in the PyTorch file ``path``, tensors on the CPU, read without running
    any code from the file (``torch.load(weights_only=True)``, after a scan of its pickle).

    ``what`` names the expected file in messages (e.g. "a synthgen detector checkpoint");
    ``allowed_globals`` are classes or functions the file may also reference (passed to
    ``torch.serialization.safe_globals``). Raises InputError that says what the file is: missing,
    a folder, not a PyTorch file (and which other format it is, when known), a pickle that wants
    to import ``module.name`` (and which tool writes such files, when known), or damaged.
    """
    import torch

    path = check_checkpoint_file(path, what)
    allowed = list(allowed_globals)
    allowed_names = {_global_name(obj) for obj in allowed}
    wanted = pickle_globals(path, what)
    refused = sorted(name for name in wanted if name not in allowed_names and not _torch_allows(name))
    if refused:
        raise InputError(_refusal(path, what, refused))
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(allowed):
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged files: all mean "unreadable"
        detail = next((line for line in str(err).splitlines() if line.strip() and "weights_only" not in line), "")
        raise InputError(
            f"{path} is damaged or not {what}: PyTorch could not read it ({type(err).__name__}"
            f"{': ' + detail[:200] if detail else ''}). Check that the file was copied whole."
        ) from None


def pickle_globals(path: str | Path, what: str = "a PyTorch checkpoint") -> set[str]:
    """``module.name`` of every Python object the pickle(s) of PyTorch file ``path`` would
    import, found by decoding its opcodes (nothing is executed). InputError when the file is not
    a PyTorch file (zip with ``data.pkl``, or the legacy sequence of pickles)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise InputError(f"{path} is an empty file; expected {what}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
            if not pickles:
                raise InputError(
                    f"{path} is a zip archive without a data.pkl (e.g. a NumPy .npz), not a PyTorch file; expected {what}"
                )
            return _scan(io.BytesIO(archive.read(pickles[0])), path, what, count=1)
    if head[:1] == b"\x80":  # pickle protocol 2 or later: the legacy torch format, or a plain pickle
        with open(path, "rb") as f:
            found = _scan(f, path, what, count=_LEGACY_PICKLES)
        if not _starts_with_torch_magic(path):
            refused = sorted(name for name in found if not _torch_allows(name))
            if refused:
                raise InputError(_refusal(path, what, refused))
            raise InputError(f"{path} is a plain Python pickle (pickle.dump), not a PyTorch file (torch.save), so not {what}")
        return found
    raise InputError(f"{path} is {_describe_foreign(head)}: not a PyTorch file, so not {what}")


def _scan(stream: io.BufferedIOBase, path: Path, what: str, count: int) -> set[str]:
    found: set[str] = set()
    for number in range(count):
        if number and not stream.read(1):
            break
        if number:
            stream.seek(-1, io.SEEK_CUR)
        strings: list[str | None] = []  # what the recent opcodes pushed, where it was a string
        memo: dict[int, str | None] = {}
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                name = opcode.name
                if name in ("GLOBAL", "INST"):
                    module, _, attr = str(arg).partition(" ")
                    found.add(f"{module}.{attr}")
                elif name == "STACK_GLOBAL":
                    module, attr = (strings[-2:] + [None, None])[:2] if len(strings) >= 2 else (None, None)
                    found.add(f"{module}.{attr}" if module and attr else "<a name computed by the pickle>")
                elif "UNICODE" in name or "STRING" in name:
                    strings.append(str(arg) if not isinstance(arg, bytes) else arg.decode("latin-1"))
                elif name == "MEMOIZE":
                    memo[len(memo)] = strings[-1] if strings else None
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = strings[-1] if strings else None
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    strings.append(memo.get(int(arg)))
                elif name != "STOP":
                    strings.append(None)
                if len(strings) > 64:
                    del strings[:-8]
        except Exception:  # pickletools raises ValueError and others for bytes that are not a pickle
            if number == 0:
                raise InputError(f"{path} starts like a pickle but is not one (damaged?), so not a PyTorch file; expected {what}") from None
            break
    return found


def _starts_with_torch_magic(path: Path) -> bool:
    """Whether the first pickle of ``path`` is torch's legacy magic number."""
    with open(path, "rb") as f:
        try:
            return any(op.name == "LONG1" and arg == _TORCH_MAGIC for op, arg, _ in pickletools.genops(f))
        except Exception:
            return False


def _describe_foreign(head: bytes) -> str:
    for magic, description in _FOREIGN_MAGIC.items():
        if head.startswith(magic):
            return description
    if len(head) >= 10:
        (header_length,) = struct.unpack("<Q", head[:8])
        if head[8:10] == b'{"' and header_length < 100_000_000:
            return "a safetensors file (read it with the safetensors package and save a synthgen checkpoint)"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        return "a JSON file"
    if stripped[:5].lower() in (b"<!doc", b"<html"):
        return "a web page (a failed download?)"
    return "of unknown content"


def _refusal(path: Path, what: str, refused: list[str]) -> str:
    tool = next((text for prefix, text in _TOOLS.items() for name in refused if name.startswith(prefix + ".")), None)
    names = ", ".join(f"`{name}`" for name in refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
    kind = f"{tool}: a pickle" if tool else "a pickle"
    return (
        f"{path} is {kind} that wants to import {names}, which a checkpoint of plain tensors never "
        f"needs; synthgen does not run code from files, so it is refused. Expected {what}."
    )


def _global_name(obj: Any) -> str:
    if isinstance(obj, tuple):  # (object, "module.name") as torch's safe_globals accepts
        return str(obj[1])
    return f"{obj.__module__}.{obj.__qualname__}"


def _torch_allows(name: str) -> bool:
    """Whether torch's weights-only unpickler accepts this global (its built-in allowlist, or
    what the program registered with ``torch.serialization.add_safe_globals``)."""
    import torch

    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        if name in _get_allowed_globals():
            return True
    except ImportError:  # a torch without the private list: its public basics
        if name.startswith(("torch.", "collections.OrderedDict", "_codecs.encode")):
            return True
    if name.startswith("torch.") and name.rsplit(".", 1)[-1].startswith("_rebuild"):
        return True
    return any(_global_name(obj) == name for obj in torch.serialization.get_safe_globals())
