"""The published trained models synthgen knows by name, and where their files are on this machine.

Each model is one small TOML *card* in the top-level ``models/`` folder of the repository (shipped
in the wheel as ``synthgen/model_cards/``), so adding a model is adding a file. A card says what
the model is (``kind`` ``generator`` or ``segmenter``, ``family``, ``title``, ``classes``, the
``[architecture]`` settings, the ``[postprocess]`` it needs such as the car models' ``crop``),
its licence, and each file it needs: the official file name, where it is published (``url`` and
``mirrors``, or a Google Drive ``drive_id`` / ``drive_folder``), its ``size`` and ``sha256``
(0 / empty when not published: the hash is then pinned on this machine the first time the file
is verified, see :mod:`synthgen.generators.download`), and for files published inside an
archive the ``archive`` to fetch and the ``member`` to take out of it. Extra files (DM-GAN's text
encoder and captions) are ``[[companions]]`` with a ``role``.

Files live in the models folder, :func:`models_dir`: ``$SYNTHGEN_MODELS``, else ``models/`` in
synthgen's cache. A file a user put there under its official name (or one of its
``also_named`` names) is found without any download; anywhere a name is accepted, a path to a
file is accepted too.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from synthgen.cache import cache_root
from synthgen.errors import InputError, NotAvailableError

KINDS = ("generator", "segmenter")
MAIN_ROLE = "model"
_FILE_KEYS = {"file", "also_named", "format", "url", "mirrors", "drive_id", "drive_folder", "archive", "member", "size", "sha256"}
_CARD_KEYS = {"name", "kind", "family", "title", "classes", "licence", "published", "architecture", "postprocess", "companions"}


def models_dir() -> Path:
    """The folder that holds model files: ``$SYNTHGEN_MODELS``, else ``<cache>/models``."""
    if os.environ.get("SYNTHGEN_MODELS"):
        return Path(os.environ["SYNTHGEN_MODELS"]).expanduser()
    return cache_root() / "models"


def cards_dir() -> Path:
    """Where the cards are: ``synthgen/model_cards/`` in an installed wheel (pyproject maps the
    repository's ``models/`` there), else ``models/`` beside the package in a source checkout or
    an editable install (which serve the source tree as it is)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "model_cards"
    return installed if installed.is_dir() else package.parent / "models"


@dataclass(frozen=True)
class ModelFile:
    """One file a model needs, and where it is published."""

    role: str  # "model" for the main file; companions name theirs ("text_encoder", "captions")
    file: str  # the official file name, which is also its name in the models folder
    also_named: tuple[str, ...] = ()
    format: str = ""
    url: str = ""
    mirrors: tuple[str, ...] = ()
    drive_id: str = ""
    drive_folder: str = ""
    archive: str = ""  # published inside this archive (.zip, .tar.gz), saved under this name
    member: str = ""  # the archive member to extract (matched by its last path part)
    size: int = 0  # bytes; 0 = not published
    sha256: str = ""  # hex; "" = not published (pinned on first verification)

    @property
    def download(self) -> str:
        """What is fetched: the archive when there is one, else the file itself."""
        return self.archive or self.file

    def sources(self) -> list[str]:
        """Where a person can get the file, for messages (URLs first, then Google Drive)."""
        found = [u for u in (self.url, *self.mirrors) if u]
        if self.drive_id:
            found.append(f"https://drive.google.com/uc?id={self.drive_id}")
        if self.drive_folder:
            found.append(f"https://drive.google.com/drive/folders/{self.drive_folder} (the file {self.download})")
        return found


@dataclass(frozen=True)
class ModelCard:
    """A published model (see the module docstring for the fields)."""

    name: str
    kind: str
    family: str
    title: str
    classes: tuple[str, ...]
    licence: str
    published: str
    files: tuple[ModelFile, ...]  # files[0] is the main file (role "model")
    architecture: dict[str, Any] = field(default_factory=dict)
    postprocess: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # the card file

    @property
    def main(self) -> ModelFile:
        return self.files[0]

    def file(self, role: str) -> ModelFile:
        for entry in self.files:
            if entry.role == role:
                return entry
        raise InputError(f"model {self.name} has no {role!r} file; its files: {', '.join(f.role for f in self.files)}")

    @property
    def crop(self) -> tuple[int, int, int, int] | None:
        """``(x0, y0, x1, y1)`` of the content in the generator's output, or None."""
        crop = self.postprocess.get("crop")
        return None if crop is None else tuple(int(v) for v in crop)  # type: ignore[return-value]


# -- parsing ----------------------------------------------------------------------------------


def _problem(path: Path, what: str) -> InputError:
    return InputError(f"model card {path} is invalid: {what}")


def _file_entry(path: Path, table: dict[str, Any], role: str) -> ModelFile:
    unknown = sorted(set(table) - _FILE_KEYS - {"role"})
    if unknown:
        raise _problem(path, f"unknown field(s) {', '.join(unknown)} for the {role} file")
    name = table.get("file")
    if not isinstance(name, str) or not name or "/" in name or "\\" in name:
        raise _problem(path, f"the {role} file needs `file`, a plain file name, got {name!r}")
    sha = str(table.get("sha256", "")).lower()
    if sha and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise _problem(path, f"sha256 of {name} must be 64 hex digits or empty, got {sha!r}")
    size = table.get("size", 0)
    if not isinstance(size, int) or size < 0:
        raise _problem(path, f"size of {name} must be a number of bytes (0 = not published), got {size!r}")
    if bool(table.get("archive")) != bool(table.get("member")):
        raise _problem(path, f"{name}: `archive` and `member` go together")
    entry = ModelFile(
        role=role,
        file=name,
        also_named=tuple(table.get("also_named", ())),
        format=str(table.get("format", "")),
        url=str(table.get("url", "")),
        mirrors=tuple(table.get("mirrors", ())),
        drive_id=str(table.get("drive_id", "")),
        drive_folder=str(table.get("drive_folder", "")),
        archive=str(table.get("archive", "")),
        member=str(table.get("member", "")),
        size=size,
        sha256=sha,
    )
    if not entry.sources():
        raise _problem(path, f"{name} says nowhere it is published (url, drive_id or drive_folder)")
    return entry


def parse_card(path: Path) -> ModelCard:
    """Read and validate one card; InputError naming the file and the field on any problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise _problem(path, str(err)) from None
    unknown = sorted(set(data) - _CARD_KEYS - _FILE_KEYS)
    if unknown:
        raise _problem(path, f"unknown field(s) {', '.join(unknown)}")
    for key in ("name", "kind", "family", "title", "licence", "published"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise _problem(path, f"`{key}` is missing or empty")
    if data["name"] != path.stem:
        raise _problem(path, f"name {data['name']!r} must equal the file name {path.stem!r}")
    if data["kind"] not in KINDS:
        raise _problem(path, f"kind {data['kind']!r} must be one of {', '.join(KINDS)}")
    classes = data.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise _problem(path, "`classes` must be a non-empty list of names")
    main = _file_entry(path, {k: v for k, v in data.items() if k in _FILE_KEYS}, MAIN_ROLE)
    companions = []
    for table in data.get("companions", []):
        role = table.get("role")
        if not isinstance(role, str) or not role or role == MAIN_ROLE:
            raise _problem(path, f"every [[companions]] entry needs a `role` (not {MAIN_ROLE!r})")
        companions.append(_file_entry(path, table, role))
    roles = [MAIN_ROLE, *(c.role for c in companions)]
    if len(set(roles)) != len(roles):
        raise _problem(path, f"roles must be distinct, got {roles}")
    postprocess = dict(data.get("postprocess", {}))
    crop = postprocess.get("crop")
    if crop is not None and not (
        isinstance(crop, list) and len(crop) == 4 and all(isinstance(v, int) for v in crop)
        and 0 <= crop[0] < crop[2] and 0 <= crop[1] < crop[3]
    ):
        raise _problem(path, f"postprocess.crop must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got {crop!r}")
    return ModelCard(
        name=data["name"], kind=data["kind"], family=data["family"], title=data["title"],
        classes=tuple(classes), licence=data["licence"], published=data["published"],
        files=(main, *companions), architecture=dict(data.get("architecture", {})),
        postprocess=postprocess, path=path,
    )


@lru_cache(maxsize=None)
def _cards(folder: Path) -> dict[str, ModelCard]:
    if not folder.is_dir():
        raise NotAvailableError(f"the model cards folder {folder} is missing: this synthgen installation is incomplete; reinstall it")
    return {card.name: card for card in map(parse_card, sorted(folder.glob("*.toml")))}


def all_cards() -> dict[str, ModelCard]:
    """Every card, by name, in name order."""
    return _cards(cards_dir())


def get_card(name: str) -> ModelCard:
    cards = all_cards()
    if name not in cards:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(cards)} (or give the path of a model file)")
    return cards[name]


def card_for_file(path: Path) -> ModelCard | None:
    """The card whose main file has ``path``'s name (official or ``also_named``), if any: a user's
    copy of ``karras2019stylegan-cars-512x384.pkl`` gets the car crop wherever it lies."""
    for card in all_cards().values():
        if path.name in (card.main.file, *card.main.also_named):
            return card
    return None


# -- finding the files ------------------------------------------------------------------------


def find_file(entry: ModelFile, folder: Path | None = None) -> Path | None:
    """The file in the models folder under its official name or one of its other names."""
    folder = models_dir() if folder is None else folder
    for name in (entry.file, *entry.also_named):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def missing_file_message(card: ModelCard, entry: ModelFile, folder: Path | None = None) -> str:
    """Which file to put where, and how to get it, for a file that is not on this machine."""
    folder = models_dir() if folder is None else folder
    what = f"{card.name} ({card.title})" + ("" if entry.role == MAIN_ROLE else f", as its {entry.role.replace('_', ' ')},")
    get = "\n  ".join(entry.sources())
    if entry.archive:
        placement = (
            f"{folder / entry.file} (it is published inside {entry.archive}: put that archive at "
            f"{folder / '.downloads' / entry.archive} and run `synthgen models pull {card.name}`, which "
            f"extracts {entry.member} from it without the network, or extract it yourself)"
        )
    else:
        placement = str(folder / entry.file)
    return (
        f"{what} needs the file {entry.file}, which is not in the models folder {folder} "
        f"($SYNTHGEN_MODELS). Run `synthgen models pull {card.name}` on a machine with internet, or "
        f"download it yourself from:\n  {get}\nand put it at {placement}. Licence: {card.licence}."
    )


def resolve_model_file(name_or_path: str | Path, role: str = MAIN_ROLE) -> tuple[ModelCard | None, Path]:
    """``(card, path)`` of a model given by name or by path.

    A name gives its card and the file of ``role`` in the models folder (NotAvailableError, saying
    which file to put where, when it is absent). A path to an existing file gives that path and
    the card whose official file name it has (None for any other file). Anything else is an
    InputError listing the known names.
    """
    text = str(name_or_path)
    cards = all_cards()
    if text in cards:
        card = cards[text]
        entry = card.file(role)
        found = find_file(entry)
        if found is None:
            raise NotAvailableError(missing_file_message(card, entry))
        return card, found
    path = Path(text).expanduser()
    if path.is_file():
        return card_for_file(path), path
    if path.exists():
        raise InputError(f"{path} is a folder, not a model file; give a model name ({', '.join(cards)}) or a model file")
    raise InputError(f"{text!r} is neither a known model ({', '.join(cards)}) nor an existing file")


def resolve_model_files(name: str) -> tuple[ModelCard, dict[str, Path]]:
    """Every file of model ``name`` by role (DM-GAN needs three); NotAvailableError listing all
    the missing ones."""
    card = get_card(name)
    found, missing = {}, []
    for entry in card.files:
        path = find_file(entry)
        if path is None:
            missing.append(missing_file_message(card, entry))
        else:
            found[entry.role] = path
    if missing:
        raise NotAvailableError("\n".join(missing))
    return card, found
