"""The model registry (cards in models/), finding model files, and `pull` / `verify` against a
local HTTP server (resume, checksum refusal, offline message)."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import shutil
import socket
import tarfile
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from synthgen.errors import InputError, NotAvailableError
from synthgen.generators import download as model_download
from synthgen.generators.download import FileMismatch, pull, verify
from synthgen.generators.registry import (
    MAIN_ROLE,
    all_cards,
    cards_dir,
    get_card,
    models_dir,
    parse_card,
    resolve_model_file,
    resolve_model_files,
)

PUBLISHED = {
    "stylegan-ffhq", "stylegan-cars", "stylegan2-ffhq", "stylegan2-car", "stylegan2-ada-ffhq",
    "dmgan-birds", "redo-lfw", "redo-cub", "redo-flowers",
}


@pytest.fixture(autouse=True)
def models_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv("SYNTHGEN_MODELS", str(folder))
    return folder


# --- cards -----------------------------------------------------------------------------------


def test_every_card_parses_and_names_its_files():
    cards = all_cards()
    assert set(cards) == PUBLISHED
    assert cards_dir() == Path(__file__).resolve().parents[1] / "models"
    for card in cards.values():
        assert card.files[0].role == MAIN_ROLE and card.main.sources(), card.name
        assert card.kind == ("segmenter" if card.name.startswith("redo-") else "generator")
    assert get_card("stylegan-cars").crop == (0, 64, 512, 448)
    assert get_card("stylegan2-car").crop == (0, 64, 512, 448)
    assert get_card("stylegan-ffhq").crop is None
    assert get_card("stylegan-ffhq").main.file == "karras2019stylegan-ffhq-1024x1024.pkl"
    assert [f.role for f in get_card("dmgan-birds").files] == ["model", "text_encoder", "captions"]


def test_every_name_resolves_to_the_file_a_user_placed(models_folder: Path):
    for card in all_cards().values():
        with pytest.raises(NotAvailableError) as err:
            resolve_model_file(card.name)
        message = str(err.value)
        assert card.main.file in message and str(models_folder) in message and "synthgen models pull" in message
    models_folder.mkdir()
    for card in all_cards().values():
        for entry in card.files:
            (models_folder / entry.file).write_bytes(b"x")
        found_card, path = resolve_model_file(card.name)
        assert found_card is card and path == models_folder / card.main.file
        assert set(resolve_model_files(card.name)[1]) == {f.role for f in card.files}


def test_a_path_is_accepted_where_a_name_is(tmp_path: Path):
    elsewhere = tmp_path / "mine" / "karras2019stylegan-cars-512x384.pkl"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"x")
    card, path = resolve_model_file(str(elsewhere))
    assert card is not None and card.name == "stylegan-cars" and path == elsewhere  # gets the car crop
    other = tmp_path / "mine" / "network-snapshot-000100.pkl"
    other.write_bytes(b"x")
    assert resolve_model_file(other) == (None, other)
    with pytest.raises(InputError, match="neither a known model"):
        resolve_model_file("stylegan-horses")


def test_other_names_of_a_file_are_found(models_folder: Path):
    models_folder.mkdir()
    (models_folder / "stylegan-ffhq-1024x1024.pkl").write_bytes(b"x")  # the README table's name
    assert resolve_model_file("stylegan-ffhq")[1].name == "stylegan-ffhq-1024x1024.pkl"


def test_models_folder_defaults_inside_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("SYNTHGEN_MODELS")
    monkeypatch.setenv("SYNTHGEN_CACHE", str(tmp_path / "cache"))
    assert models_dir() == tmp_path / "cache" / "models"


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda t: t.replace('kind = "generator"', 'kind = "painter"'), "kind 'painter'"),
        (lambda t: t.replace('sha256 = ""', 'sha256 = "abc"'), "64 hex digits"),
        (lambda t: t.replace('classes = ["car"]', "classes = []"), "classes"),
        (lambda t: t.replace("crop = [0, 64, 512, 448]", "crop = [0, 448, 512, 64]"), "crop"),
        (lambda t: t.replace('drive_id = "1MJ6iCfNtMIRicihwRorsM3b7mmtmK9c3"', ""), "nowhere it is published"),
        (lambda t: "colour = 1\n" + t, "unknown field"),
        (lambda t: t + "\n[[companions]]\nfile = 'x.pth'\nurl = 'http://x'\n", "role"),
    ],
)
def test_a_bad_card_is_refused_with_its_file_and_field(tmp_path: Path, edit, message):
    source = (cards_dir() / "stylegan-cars.toml").read_text()
    bad = tmp_path / "stylegan-cars.toml"
    bad.write_text(edit(source))
    with pytest.raises(InputError, match=message) as err:
        parse_card(bad)
    assert str(bad) in str(err.value)


def test_the_wheel_ships_the_cards(tmp_path: Path):
    """pyproject maps models/ to synthgen/model_cards in the wheel, and lists every package."""
    pytest.importorskip("setuptools", minversion="68")
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"  # a clean copy: an in-tree build would leave build/ behind, and reuse it
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(root / name, source / name)
    for name in ("synthgen", "models"):
        shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    if built.returncode != 0 and "No module named pip" in built.stderr:
        pytest.skip("pip is not available")
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("synthgen-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for card in (root / "models").glob("*.toml"):
        assert f"synthgen/model_cards/{card.name}" in names
    packages = {str(p.parent.relative_to(root)) for p in (root / "synthgen").rglob("*.py")}
    shipped = {n.rsplit("/", 1)[0] for n in names if n.endswith(".py")}
    assert packages <= shipped, f"add {sorted(packages - shipped)} to [tool.setuptools] packages in pyproject.toml"


# --- pull against a local server ---------------------------------------------------------------


class _Server:
    """Serves ``files`` (name -> bytes) on 127.0.0.1 with Range support; ``cut_after`` bytes of
    the next response, then the connection is dropped (a broken download)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.cut_after: int | None = None
        self.ranges: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                body = server.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                wanted = self.headers.get("Range")
                server.ranges.append(wanted)
                start = int(wanted.split("=")[1].split("-")[0]) if wanted else 0
                self.send_response(206 if wanted else 200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body) - start))
                if wanted:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                payload = body[start:]
                if server.cut_after is not None:
                    payload, server.cut_after = payload[: server.cut_after], None
                    self.wfile.write(payload)
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "_Server":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _card_served_at(monkeypatch: pytest.MonkeyPatch, url: str, *, sha256: str = "", size: int = 0, **fields):
    """stylegan2-ffhq's card, published at ``url`` instead of NVIDIA's server."""
    card = get_card("stylegan2-ffhq")
    main = replace(card.main, url=url, mirrors=(), sha256=sha256, size=size, **fields)
    card = replace(card, files=(main,))
    monkeypatch.setattr(model_download, "get_card", lambda name: card)
    return card


BLOB = bytes(range(256)) * 4096  # 1 MiB


def test_pull_resumes_a_broken_download(models_folder: Path, monkeypatch: pytest.MonkeyPatch):
    with _Server({"G.pkl": BLOB}) as server:
        _card_served_at(monkeypatch, f"{server.url}/G.pkl", sha256=hashlib.sha256(BLOB).hexdigest(), size=len(BLOB))
        server.cut_after = 300_000
        with pytest.raises(NotAvailableError, match="300,000 bytes arrived and are kept"):
            pull("stylegan2-ffhq", progress=False)
        assert not (models_folder / "stylegan2-ffhq-config-f.pkl").exists()  # never a partial file under its name
        (check,) = pull("stylegan2-ffhq", progress=False)
        assert server.ranges == [None, "bytes=300000-"]
    assert check.state == "published" and check.downloaded
    assert (models_folder / "stylegan2-ffhq-config-f.pkl").read_bytes() == BLOB
    assert not list((models_folder / ".downloads").iterdir())


def test_pull_refuses_a_checksum_mismatch_and_keeps_nothing(models_folder: Path, monkeypatch: pytest.MonkeyPatch):
    with _Server({"G.pkl": BLOB}) as server:
        _card_served_at(monkeypatch, f"{server.url}/G.pkl", sha256="0" * 64)
        with pytest.raises(FileMismatch, match="deleted, not kept"):
            pull("stylegan2-ffhq", progress=False)
    assert not (models_folder / "stylegan2-ffhq-config-f.pkl").exists()
    assert not [p for p in (models_folder / ".downloads").iterdir()]


def test_an_unknown_hash_is_pinned_when_first_verified(models_folder: Path, monkeypatch: pytest.MonkeyPatch):
    with _Server({"G.pkl": BLOB}) as server:
        _card_served_at(monkeypatch, f"{server.url}/G.pkl")
        (check,) = pull("stylegan2-ffhq", progress=False)
    assert check.state == "pinned now" and "no published sha256" in check.describe()
    pins = json.loads((models_folder / "sha256-pins.json").read_text())
    assert pins["stylegan2-ffhq-config-f.pkl"]["sha256"] == hashlib.sha256(BLOB).hexdigest()
    assert [c.state for c in verify("stylegan2-ffhq")] == ["pinned"]
    (models_folder / "stylegan2-ffhq-config-f.pkl").write_bytes(BLOB[:-1] + b"!")  # changed since
    with pytest.raises(FileMismatch, match="first verified on this machine"):
        verify("stylegan2-ffhq")
    assert (models_folder / "stylegan2-ffhq-config-f.pkl").exists()  # the user's file is reported, not deleted


def test_offline_pull_fails_at_once_saying_which_file_to_put_where(models_folder: Path, monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as s:  # a port nobody listens on: connection refused, as without network
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _card_served_at(monkeypatch, f"http://127.0.0.1:{port}/G.pkl")
    with pytest.raises(NotAvailableError) as err:
        pull("stylegan2-ffhq", progress=False)
    message = str(err.value)
    assert f"http://127.0.0.1:{port}/G.pkl" in message
    assert str(models_folder / "stylegan2-ffhq-config-f.pkl") in message


def test_a_member_is_extracted_from_a_published_archive(models_folder: Path, monkeypatch: pytest.MonkeyPatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("lfw_netM_state/stylegan2-ffhq-config-f.pkl")
        info.size = len(BLOB)
        tar.addfile(info, io.BytesIO(BLOB))
    with _Server({"a.tar.gz": buffer.getvalue()}) as server:
        _card_served_at(monkeypatch, f"{server.url}/a.tar.gz", archive="x.tar.gz", member="stylegan2-ffhq-config-f.pkl")
        (check,) = pull("stylegan2-ffhq", progress=False)
    assert check.path.read_bytes() == BLOB
    assert not list((models_folder / ".downloads").iterdir())


def test_a_drive_confirmation_page_is_followed():
    page = (
        b'<html><title>Google Drive - Virus scan warning</title><form id="download-form" '
        b'action="https://drive.usercontent.google.com/download" method="get">'
        b'<input type="hidden" name="id" value="ABC"><input type="hidden" name="export" value="download">'
        b'<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1"></form></html>'
    )
    url = model_download._drive_confirmation(page)
    assert url == "https://drive.usercontent.google.com/download?id=ABC&export=download&confirm=t&uuid=u-1"
    assert model_download._drive_confirmation(b"<html><title>Quota exceeded</title></html>") is None


# --- the models commands -----------------------------------------------------------------------


def test_models_list_info_path_and_verify(models_folder: Path):
    from tests.test_cli import run

    code, text = run("models", "list")
    assert code == 0 and all(name in text for name in PUBLISHED) and str(models_folder) in text
    code, text = run("models", "info", "stylegan-cars")
    assert code == 0
    for expected in ("karras2019stylegan-cars-512x384.pkl", "1MJ6iCfNtMIRicihwRorsM3b7mmtmK9c3", "postprocess.crop",
                     "[0, 64, 512, 448]", "CC BY-NC 4.0", "not known yet", "missing: goes to"):
        assert expected.replace(" ", "") in text.replace(" ", ""), expected  # long values are folded
    code, text = run("models", "path", "stylegan-cars")
    assert code == 3 and "karras2019stylegan-cars-512x384.pkl" in text
    models_folder.mkdir()
    (models_folder / "karras2019stylegan-cars-512x384.pkl").write_bytes(BLOB)
    code, text = run("models", "path", "stylegan-cars")
    assert code == 0 and text == str(models_folder / "karras2019stylegan-cars-512x384.pkl")
    code, text = run("models", "verify")
    assert code == 0 and "stylegan-cars" in text and "pinned this one" in text
    code, text = run("models", "info", "stylegan-cars")
    assert hashlib.sha256(BLOB).hexdigest() in text.replace(" ", "") and "pinned on this machine" in text
    code, text = run("models", "info", "stylegan-horses")
    assert code == 2 and "unknown model" in text
