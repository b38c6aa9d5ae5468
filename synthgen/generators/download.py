"""Fetching and checking model files: ``synthgen models pull NAME`` and ``verify``.

A file is streamed to ``<models>/.downloads/<name>.part`` (the HTTP machinery of
:func:`synthgen.download.stream_url`: a progress bar, and a broken download resumed with a
``Range`` request on the next pull), checked, and only then renamed into the models folder, so a
file under its official name there is always a complete one. Files published inside an archive
(ReDO's ``.tar.gz``, DM-GAN's ``.zip``) have their one member extracted; an archive a user copied
to ``.downloads/`` is used without the network.

Checks: the published size, and the SHA-256. No author of these models publishes a hash, so a
card's ``sha256`` is usually empty: the first time a file is verified on a machine its hash is
*pinned* (``<models>/sha256-pins.json``) and said so; from then on a file with another hash is
refused (a download is deleted, never renamed into place; a file the user placed is reported,
not deleted). Put the pinned hash into the card to pin it for everybody.

Google Drive files are fetched from Drive's download endpoint, following its "cannot scan for
viruses" confirmation page; when Drive refuses (quota, login) the error says where to get the
file by browser and where to put it. Files published only in a Drive *folder* (ReDO) cannot be
fetched automatically. Without network every pull fails at once with the same advice.
"""

from __future__ import annotations

import html
import http.client
import json
import os
import re
import shutil
import tarfile
import time
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

from synthgen.cache import atomic_write_json
from synthgen.download import NotTheFile, file_digest, stream_url
from synthgen.errors import InputError, NotAvailableError, WriteError
from synthgen.generators.registry import ModelCard, ModelFile, find_file, get_card, missing_file_message, models_dir

PINS_FILE = "sha256-pins.json"
DOWNLOADS = ".downloads"
DRIVE_DOWNLOAD = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"


@dataclass(frozen=True)
class FileCheck:
    """The outcome of checking one model file."""

    role: str
    path: Path
    sha256: str
    #: "published" (matches the card's hash), "pinned" (matches this machine's pin) or
    #: "pinned now" (no hash was known: this one is now pinned).
    state: str
    downloaded: bool = False

    def describe(self) -> str:
        how = {
            "published": "sha256 matches the card",
            "pinned": "sha256 matches the hash pinned on this machine",
            "pinned now": "no published sha256: pinned this one (later copies must match)",
        }[self.state]
        return f"{self.path.name}: {'downloaded, ' if self.downloaded else ''}{how} ({self.sha256[:16]}...)"


class FileMismatch(NotAvailableError):
    """A file is not the one expected (size or hash)."""


# -- pins -------------------------------------------------------------------------------------


def read_pins(folder: Path) -> dict[str, dict]:
    path = folder / PINS_FILE
    if not path.is_file():
        return {}
    try:
        pins = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path} is unreadable ({err}); fix or delete it (it only records hashes pinned here)") from None
    return pins if isinstance(pins, dict) else {}


def _pin(folder: Path, card: ModelCard, entry: ModelFile, sha256: str, size: int) -> None:
    pins = read_pins(folder)
    pins[entry.file] = {"sha256": sha256, "size": size, "model": card.name, "pinned": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(folder / PINS_FILE, pins)


# -- checking ---------------------------------------------------------------------------------


def check_file(card: ModelCard, entry: ModelFile, path: Path, folder: Path, *, downloaded: bool = False) -> FileCheck:
    """Check ``path`` against the card's size and hash, or this machine's pin (pinning it when
    nothing is known). A mismatch raises FileMismatch; a downloaded file is deleted first."""
    size = path.stat().st_size
    sha256 = file_digest(path, "sha256")
    pin = read_pins(folder).get(entry.file)
    problem = None
    if entry.size and size != entry.size:
        problem = f"has {size:,} bytes; the published file has {entry.size:,}"
    elif entry.sha256 and sha256 != entry.sha256:
        problem = f"has sha256 {sha256}; the card ({card.path}) says {entry.sha256}"
    elif not entry.sha256 and pin and sha256 != pin.get("sha256"):
        problem = (
            f"has sha256 {sha256}; the copy first verified on this machine ({pin.get('pinned')}) had "
            f"{pin.get('sha256')}. If the new one is right, remove its entry from {folder / PINS_FILE}"
        )
    if problem is not None:
        if downloaded:
            path.unlink(missing_ok=True)
            raise FileMismatch(f"the download of {entry.file} {problem}. It was deleted, not kept; try `synthgen models pull {card.name}` again or another source")
        raise FileMismatch(f"{path} {problem}. It is not the official file, or it is damaged: delete it and run `synthgen models pull {card.name}`")
    if entry.sha256:
        state = "published"
    elif pin:
        state = "pinned"
    else:
        _pin(folder, card, entry, sha256, size)
        state = "pinned now"
    return FileCheck(entry.role, path, sha256, state, downloaded)


def verify(name: str, folder: Path | None = None) -> list[FileCheck]:
    """Check every file of model ``name`` that is on this machine; NotAvailableError when one is
    missing (with where to put it), FileMismatch when one is not the expected file."""
    folder = models_dir() if folder is None else folder
    card = get_card(name)
    checks = []
    for entry in card.files:
        path = find_file(entry, folder)
        if path is None:
            raise NotAvailableError(missing_file_message(card, entry, folder))
        checks.append(check_file(card, entry, path, folder))
    return checks


# -- pulling ----------------------------------------------------------------------------------


def pull(name: str, folder: Path | None = None, progress: bool = True) -> list[FileCheck]:
    """Make every file of model ``name`` present and checked in the models folder, downloading
    what is missing. Files already there are only checked."""
    folder = models_dir() if folder is None else folder
    card = get_card(name)
    return [_pull_file(card, entry, folder, progress) for entry in card.files]


def _pull_file(card: ModelCard, entry: ModelFile, folder: Path, progress: bool) -> FileCheck:
    present = find_file(entry, folder)
    if present is not None:
        return check_file(card, entry, present, folder)
    downloads = folder / DOWNLOADS
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(f"cannot create the models folder {folder}: {err}; set $SYNTHGEN_MODELS to a writable folder") from None
    fetched = downloads / entry.download
    if not fetched.is_file():
        _fetch(card, entry, fetched, folder, progress)
    candidate = downloads / entry.file if entry.archive else fetched
    if entry.archive:
        _extract_member(card, entry, fetched, candidate)
    try:
        check = check_file(card, entry, candidate, folder, downloaded=True)
    except FileMismatch:
        fetched.unlink(missing_ok=True)  # the archive it came from is not the published one either
        raise
    final = folder / entry.file
    os.replace(candidate, final)
    fetched.unlink(missing_ok=True)
    return FileCheck(check.role, final, check.sha256, check.state, downloaded=True)


def _fetch(card: ModelCard, entry: ModelFile, target: Path, folder: Path, progress: bool) -> None:
    """Download ``entry.download`` to ``target`` from the first source that answers, resuming
    what an earlier try left in ``target.part``; NotAvailableError saying why each source failed
    and where to put the file otherwise."""
    part = target.with_name(target.name + ".part")
    failures = []
    urls = [u for u in (entry.url, *entry.mirrors) if u]
    if entry.drive_id:
        urls.append(DRIVE_DOWNLOAD.format(id=entry.drive_id))
    for url in urls:
        try:
            _stream_following_drive(url, part, entry, progress)
        except (OSError, ValueError, http.client.HTTPException) as err:  # URLError is an OSError
            failures.append(f"{url}: {getattr(err, 'reason', err)}")
            continue
        if not entry.archive and entry.size and part.stat().st_size < entry.size:  # closed early, without a length
            failures.append(f"{url}: the transfer ended after {part.stat().st_size:,} of {entry.size:,} bytes")
            continue
        os.replace(part, target)
        return
    if entry.drive_folder and not urls:
        failures.append("it is published only inside a Google Drive folder, which cannot be fetched automatically")
    kept = f"\n{part.stat().st_size:,} bytes arrived and are kept: the next pull resumes from there." if part.is_file() else ""
    raise NotAvailableError(
        f"could not download {entry.download}:\n  " + "\n  ".join(failures) + kept + "\n" + missing_file_message(card, entry, folder)
    )


def _stream_following_drive(url: str, part: Path, entry: ModelFile, progress: bool) -> None:
    """:func:`stream_url` with resume; a Google Drive confirmation page is followed once, other
    pages (quota exceeded, sign-in) become a ValueError that says what Drive answered."""
    try:
        stream_url(url, part, label=entry.download, expected_size=entry.size or None, progress=progress, resume=True)
    except NotTheFile as page:
        confirmed = _drive_confirmation(page.page)
        if confirmed is None:
            raise ValueError(f"Google Drive answered with a page instead of the file ({_page_title(page.page)})") from None
        try:
            stream_url(confirmed, part, label=entry.download, expected_size=entry.size or None, progress=progress, resume=True)
        except NotTheFile as again:
            raise ValueError(f"Google Drive keeps answering with a page ({_page_title(again.page)}); download it in a browser") from None


def _drive_confirmation(page: bytes) -> str | None:
    """The download URL of Drive's "cannot scan this file for viruses" form, or None."""
    text = page.decode("utf-8", "replace")
    form = re.search(r'<form[^>]*id="download-form"[^>]*action="([^"]+)"[^>]*>(.*?)</form>', text, re.S)
    if form is None:
        return None
    fields = dict(re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', form.group(2)))
    return html.unescape(form.group(1)) + "?" + urllib.parse.urlencode(fields)


def _page_title(page: bytes) -> str:
    match = re.search(rb"<title>(.*?)</title>", page, re.S | re.I)
    return html.unescape(match.group(1).decode("utf-8", "replace").strip()) if match else "no title"


def _extract_member(card: ModelCard, entry: ModelFile, archive: Path, out: Path) -> None:
    """Copy the archive member named ``entry.member`` (its last path part) to ``out``, streaming;
    the member is written under our own name, so the archive's paths never matter."""

    def pick(names: list[str]) -> str:
        hits = [n for n in names if n.rstrip("/").rsplit("/", 1)[-1] == entry.member]
        if len(hits) != 1:
            listing = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            found = "no member" if not hits else f"{len(hits)} members"
            raise FileMismatch(
                f"{archive} has {found} named {entry.member} (it holds: {listing}); it is not {entry.archive} "
                f"of {card.name}. Delete it and run `synthgen models pull {card.name}` again"
            )
        return hits[0]

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf, zf.open(pick(zf.namelist())) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            return
        with tarfile.open(archive) as tf:
            member = tf.getmember(pick([m.name for m in tf.getmembers() if m.isfile()]))
            src = tf.extractfile(member)
            assert src is not None  # a regular file
            with src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        archive.unlink(missing_ok=True)
        raise FileMismatch(f"{archive} is not a readable archive ({err}); it was deleted: run `synthgen models pull {card.name}` again") from None
