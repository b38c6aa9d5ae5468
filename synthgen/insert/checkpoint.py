"""The inserter's run checkpoint (``RUN/last.pt``): networks, optimizers, image pools, the
labelled boxes the box sources need, and the settings they were trained with.

A plain ``torch.save`` dict read back with ``weights_only=True`` (tensors, numbers, strings,
lists, dicts: no code runs on load), tagged ``format = "synthgen-inserter"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from synthgen.errors import InputError

FORMAT = "synthgen-inserter"
VERSION = 1
FILE = "last.pt"


def checkpoint_path(run: str | Path) -> Path:
    """A run folder's checkpoint, or the file itself."""
    run = Path(run)
    return run / FILE if run.is_dir() else run


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: an interrupt leaves the previous checkpoint whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
    tmp.replace(path)


def load(run: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a run folder or file; InputError for anything else, with what to do."""
    path = checkpoint_path(run)
    if not path.is_file():
        raise InputError(
            f"no inserter checkpoint at {path}. Train one first: synthgen train detectorgan --clean DIR "
            "--labeled COCO.json --out RUN, then pass --checkpoint RUN"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # foreign files raise many types: all mean "not ours"
        raise InputError(
            f"{path} is not an inserter checkpoint: it could not be read as a PyTorch file of plain tensors "
            f"and values ({type(err).__name__}: {(str(err).splitlines() or [''])[0]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        kind = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        hint = " (a detector: use it with `synthgen evaluate` or --init)" if kind == "synthgen-detector" else ""
        raise InputError(
            f"{path} is not an inserter checkpoint: expected format {FORMAT!r} (written by `synthgen train "
            f"detectorgan`), found {kind!r}{hint}"
        )
    if payload.get("version") != VERSION:
        raise InputError(f"{path} is an inserter checkpoint of version {payload.get('version')!r}; this synthgen reads {VERSION}")
    return payload
