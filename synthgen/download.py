"""Downloading the public datasets synthgen can use as backgrounds (``synthgen download NAME``).

A dataset is a set of archives that extract into one folder (``VOCdevkit/`` for Pascal VOC)
under the datasets root, ``cache_root()/"datasets"`` unless told otherwise. Each archive is
streamed to ``<root>/.downloads/<file>.part``, checked (size, md5), renamed into place,
extracted with tarfile's ``'data'`` filter (no absolute paths, no ``..``, no device files) into
a scratch folder and moved into the dataset folder file by file, the archive's *marker* file
last: a present marker means that archive is completely in place, so an interrupted run is
simply run again. An archive already lying in ``.downloads/`` (copied there from a machine with
internet) is used without touching the network.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from synthgen.cache import cache_root
from synthgen.errors import NotAvailableError, WriteError
from synthgen.registry import Registry

# Seconds to wait for a connection or for the next chunk: without internet the first attempt
# fails at once (DNS) or after this long, never hangs.
NETWORK_TIMEOUT_S = 20.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One downloadable archive of a dataset.

    ``urls`` are mirrors tried in order. ``marker`` is a file the archive contains, relative to
    the dataset folder; it is moved into place last, so its presence means "fully extracted".
    """

    filename: str
    urls: tuple[str, ...]
    size: int | None  # bytes; None when unknown
    md5: str | None  # hex digest; None when unknown (then only the size is checked)
    marker: str
    description: str


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: archives whose members all start with ``folder + "/"``."""

    name: str
    folder: str  # the top-level folder inside every archive, e.g. "VOCdevkit"
    archives: tuple[Archive, ...]
    description: str


DATASETS: Registry[DatasetSpec] = Registry("dataset")

_VOC_THOR = "https://thor.robots.ox.ac.uk/pascal/VOC"
_VOC_HOST = "http://host.robots.ox.ac.uk/pascal/VOC"  # the original host; redirects to thor

# Sizes and md5 digests of the official tars (the md5s are the ones torchvision's VOC dataset
# checks; the sizes are what the Oxford servers report as Content-Length).
VOC = DATASETS.register("voc", help="Pascal VOC 2007 trainval+test and 2012 trainval (2.9 GB)")(
    DatasetSpec(
        name="voc",
        folder="VOCdevkit",
        description="Pascal VOC 2007 + 2012",
        archives=(
            Archive(
                filename="VOCtrainval_06-Nov-2007.tar",
                urls=(
                    f"{_VOC_THOR}/voc2007/VOCtrainval_06-Nov-2007.tar",
                    f"{_VOC_HOST}/voc2007/VOCtrainval_06-Nov-2007.tar",
                ),
                size=460_032_000,
                md5="c52e279531787c972589f7e41ab4ae64",
                marker="VOC2007/ImageSets/Main/trainval.txt",
                description="VOC2007 trainval",
            ),
            Archive(
                filename="VOCtest_06-Nov-2007.tar",
                urls=(
                    f"{_VOC_THOR}/voc2007/VOCtest_06-Nov-2007.tar",
                    f"{_VOC_HOST}/voc2007/VOCtest_06-Nov-2007.tar",
                ),
                size=451_020_800,
                md5="b6e924de25625d8de591ea690078ad9f",
                marker="VOC2007/ImageSets/Main/test.txt",
                description="VOC2007 test",
            ),
            Archive(
                filename="VOCtrainval_11-May-2012.tar",
                urls=(
                    f"{_VOC_THOR}/voc2012/VOCtrainval_11-May-2012.tar",
                    f"{_VOC_HOST}/voc2012/VOCtrainval_11-May-2012.tar",
                ),
                size=1_999_639_040,
                md5="6cd6e144f989b92b3379bac3b3de84fd",
                marker="VOC2012/ImageSets/Main/trainval.txt",
                description="VOC2012 trainval",
            ),
        ),
    )
)


def datasets_root() -> Path:
    """The default folder that holds the extracted datasets (``VOCdevkit/`` ...)."""
    return cache_root() / "datasets"


def dataset_path(name: str, dest: Path | None = None) -> Path:
    """Where dataset ``name`` lives (or will live) when downloaded into ``dest``."""
    return (dest if dest is not None else datasets_root()) / DATASETS.get(name).folder


def download_dataset(name: str, dest: Path | None = None, progress: bool = True) -> Path:
    """Download and extract the registered dataset ``name`` into ``dest`` (default
    :func:`datasets_root`) and return the dataset folder (``dest/VOCdevkit`` for ``voc``).

    Archives already extracted are skipped. Raises :class:`NotAvailableError` when an archive
    cannot be fetched (no network: within ~20 s) or fails its checks, naming the URL and where
    to put the file instead; :class:`WriteError` when the destination cannot be written.
    """
    return fetch_dataset(DATASETS.get(name), dest if dest is not None else datasets_root(), progress=progress)


def fetch_dataset(spec: DatasetSpec, dest: Path, progress: bool = True) -> Path:
    """:func:`download_dataset` for an explicit :class:`DatasetSpec`."""
    if not hasattr(tarfile, "data_filter"):
        raise NotAvailableError(
            "safe archive extraction needs tarfile filters (Python 3.10.12+, 3.11.4+ or 3.12+); "
            "upgrade Python, or extract the archives yourself"
        )
    dest = Path(dest).expanduser()
    target = dest / spec.folder
    console = Console(stderr=True, quiet=not progress)
    for archive in spec.archives:
        if (target / archive.marker).is_file():
            console.print(f"{archive.description}: already in {target}")
            continue
        try:
            tar_path = _fetch_archive(archive, dest, progress)
            _extract_archive(spec, archive, tar_path, dest, progress)
            tar_path.unlink()
        except _Unreachable as err:
            raise NotAvailableError(_offline_message(spec, dest, err.failures)) from None
        except OSError as err:
            raise WriteError(f"could not write {spec.name} into {dest}: {err}") from err
    return target


class _Unreachable(Exception):
    """No mirror of an archive could be reached; ``failures`` says why, per URL."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__("\n".join(failures))
        self.failures = failures


def _offline_message(spec: DatasetSpec, dest: Path, failures: list[str]) -> str:
    """Why the download failed, and every file still missing with where to put it."""
    target = dest / spec.folder
    missing = [
        a
        for a in spec.archives
        if not (target / a.marker).is_file() and not (_download_dir(dest) / a.filename).is_file()
    ]
    files = "\n".join(f"  {a.urls[0]}\n    -> {_download_dir(dest) / a.filename}" for a in missing)
    return (
        f"could not download {spec.description}:\n  "
        + "\n  ".join(failures)
        + "\nOn a machine with internet, download these files and copy them to the paths shown, "
        + f"then run `synthgen download {spec.name}` again (it will not need the network):\n"
        + files
        + f"\nOr extract the archives yourself into {dest}, so that {target} holds their contents."
    )


def _download_dir(dest: Path) -> Path:
    return dest / ".downloads"


def _fetch_archive(archive: Archive, dest: Path, progress: bool) -> Path:
    """Return the path of a verified copy of ``archive``, downloading it if not already there;
    :class:`_Unreachable` when no mirror answers."""
    final = _download_dir(dest) / archive.filename
    if final.is_file():
        _verify(archive, final, source=str(final), removable=False)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    failures: list[str] = []
    for url in archive.urls:
        try:
            _stream(url, part, archive, progress)
        except (OSError, ValueError, http.client.HTTPException) as err:  # URLError is an OSError
            part.unlink(missing_ok=True)
            failures.append(f"{url}: {getattr(err, 'reason', err)}")
            continue
        except WriteError:
            part.unlink(missing_ok=True)
            raise
        _verify(archive, part, source=url, removable=True)
        os.replace(part, final)
        return final
    raise _Unreachable(failures)


def _stream(url: str, part: Path, archive: Archive, progress: bool) -> None:
    stream_url(url, part, label=archive.filename, expected_size=archive.size, progress=progress)


class NotTheFile(ValueError):
    """The server answered with a web page instead of the file (a login, quota or confirmation
    page); ``page`` holds the start of it for callers that can follow it."""

    def __init__(self, url: str, page: bytes) -> None:
        super().__init__(f"{url} answered with a web page, not the file")
        self.page = page


def stream_url(url: str, part: Path, *, label: str, expected_size: int | None, progress: bool, resume: bool = False) -> None:
    """Copy ``url`` into ``part`` with a progress bar (on stderr).

    With ``resume`` and ``part`` already holding bytes, only the rest is asked for (an HTTP
    ``Range`` request) and appended; a server that ignores the range sends the whole file, which
    then replaces ``part``. Network problems raise OSError / HTTPException (``part`` keeps what
    arrived); a full disk raises WriteError; an HTML page where a file was expected, NotTheFile.
    """
    have = part.stat().st_size if resume and part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=NETWORK_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing after what we have: the file is complete
            return
        raise
    with response:
        if response.headers.get_content_type() == "text/html":
            raise NotTheFile(url, response.read(1 << 18))
        appending = have and response.status == 206
        length = response.headers.get("Content-Length")
        total = int(length) + (have if appending else 0) if length and length.isdigit() else expected_size
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar, \
                _open_for_writing(part, append=bool(appending)) as out:
            task = bar.add_task(f"downloading {label}", total=total, completed=have if appending else 0)
            while chunk := response.read(_CHUNK):
                try:
                    out.write(chunk)
                except OSError as err:  # a local problem (disk full), not the network's: no mirror helps
                    raise WriteError(f"could not write {part}: {err}") from err
                bar.advance(task, len(chunk))
            out.flush()
            os.fsync(out.fileno())


def _open_for_writing(path: Path, append: bool = False) -> BinaryIO:
    try:
        return open(path, "ab" if append else "wb")
    except OSError as err:
        raise WriteError(f"could not write {path}: {err}") from err


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of ``path``'s bytes (``"md5"``, ``"sha256"``), read in 1 MB chunks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)  # integrity, not secrecy (FIPS builds refuse md5 otherwise)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(archive: Archive, path: Path, *, source: str, removable: bool) -> None:
    """Check size and md5 of a fetched archive; a bad download is deleted so a rerun refetches."""
    size = path.stat().st_size
    problem = None
    if archive.size is not None and size != archive.size:
        problem = f"has {size} bytes, expected {archive.size}"
    elif archive.md5 is not None:
        md5 = file_digest(path, "md5")
        if md5 != archive.md5:
            problem = f"has md5 {md5}, expected {archive.md5}"
    if problem is None:
        return
    if removable:
        path.unlink(missing_ok=True)
        raise NotAvailableError(f"the download of {archive.filename} from {source} is corrupt ({problem}); run again")
    raise NotAvailableError(f"{path} is incomplete or not the official file ({problem}); delete it and run again")


def _extract_archive(spec: DatasetSpec, archive: Archive, tar_path: Path, dest: Path, progress: bool) -> None:
    """Extract ``tar_path`` into a scratch folder beside the dataset, then move its files into
    ``dest/spec.folder`` with the marker last."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".extract-{spec.name}-", dir=dest) as scratch:
        work = Path(scratch)
        try:
            with tarfile.open(tar_path) as tar, Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                disable=not progress,
            ) as bar:
                task = bar.add_task(f"extracting {archive.filename}", total=tar_path.stat().st_size)
                for member in tar:
                    tar.extract(member, work, filter="data")
                    bar.advance(task, member.size)
                bar.update(task, completed=tar_path.stat().st_size)
        except tarfile.TarError as err:
            raise NotAvailableError(
                f"{tar_path} is not a valid or safe archive ({err}); delete it and run "
                f"`synthgen download {spec.name}` again"
            ) from err
        extracted = work / spec.folder
        if not (extracted / archive.marker).is_file():
            raise NotAvailableError(
                f"{tar_path} does not contain {spec.folder}/{archive.marker}; it is not the "
                f"{archive.description} archive. Delete it and run `synthgen download {spec.name}` again"
            )
        _merge_tree(extracted, dest / spec.folder, last=Path(archive.marker))


def _merge_tree(src: Path, dst: Path, *, last: Path) -> None:
    """Move every file under ``src`` to the same place under ``dst`` (replacing what is there),
    moving ``src/last`` after all others."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.rglob("*")):  # sorted: a folder comes before its contents
        rel = path.relative_to(src)
        if rel == last:
            continue
        if path.is_dir():
            (dst / rel).mkdir(exist_ok=True)
        else:
            os.replace(path, dst / rel)
    (dst / last).parent.mkdir(parents=True, exist_ok=True)
    os.replace(src / last, dst / last)
