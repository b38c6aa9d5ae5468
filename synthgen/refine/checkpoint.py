"""The files of a SOD-MTGAN run: ``RUN/last.pt`` (networks, optimizers, settings, the baseline
detector's classes: what resume and refinement read) and ``RUN/regions.pt`` (the mined training
regions, so that a resumed run does not run the detector again).

Plain ``torch.save`` dicts (tensors, numbers, strings, lists, dicts) tagged with a ``format``,
read back through :func:`synthgen.checkpoints.load_checkpoint` (no code runs on load).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from synthgen.errors import InputError

FORMAT = "synthgen-mtgan"
REGIONS_FORMAT = "synthgen-mtgan-regions"
VERSION = 1
FILE = "last.pt"
REGIONS_FILE = "regions.pt"
_TRAIN_HINT = "synthgen train mtgan --detector CKPT --data COCO.json --out RUN"


def checkpoint_path(run: str | Path) -> Path:
    """A run folder's checkpoint, or the file itself."""
    run = Path(run)
    return run / FILE if run.is_dir() else run


def save(path: Path, payload: dict[str, Any], format: str = FORMAT) -> None:
    """Write atomically: an interrupt leaves the previous file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": format, "version": VERSION, **payload}, tmp)
    tmp.replace(path)


def load(run: str | Path, format: str = FORMAT) -> dict[str, Any]:
    """The checkpoint dict of a run folder or file (``format``: the run's ``last.pt`` or its
    ``regions.pt``); InputError for anything else, saying what it is and what to do."""
    from synthgen.checkpoints import load_checkpoint

    path = checkpoint_path(run) if format == FORMAT else Path(run)
    what = f"a SOD-MTGAN run ({'last.pt' if format == FORMAT else REGIONS_FILE} of `{_TRAIN_HINT}`)"
    if not path.exists():
        raise InputError(f"no SOD-MTGAN run at {path}. Train one first: {_TRAIN_HINT}, then pass --refine RUN")
    payload = load_checkpoint(path, what=what)
    kind = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if kind != format:
        hint = {
            "synthgen-detector": " (a detector checkpoint: pass it as --checkpoint / --detector, and the run of "
            "`synthgen train mtgan` as --refine)",
            "synthgen-inserter": " (a run of `synthgen train detectorgan`)",
        }.get(str(kind), "")
        raise InputError(f"{path} is not {what}: expected format {format!r}, found {kind!r}{hint}")
    if payload.get("version") != VERSION:
        raise InputError(f"{path} is a SOD-MTGAN file of version {payload.get('version')!r}; this synthgen reads {VERSION}")
    return payload
