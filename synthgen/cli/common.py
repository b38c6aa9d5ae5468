"""What every command module of the CLI shares: the consoles, the error wrapper that turns a
SynthgenError into one line and an exit code, and the parsers of option values."""

from __future__ import annotations

import functools
from typing import Any, Callable

import typer
from rich.console import Console
from rich.markup import escape

from synthgen.errors import InputError, SynthgenError

console = Console(stderr=True)
out_console = Console()


def friendly_errors(fn: Callable) -> Callable:
    """Print a SynthgenError as one line and exit with its code, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SynthgenError as err:
            console.print(f"[bold red]error:[/] {escape(str(err))}")
            raise typer.Exit(err.exit_code) from None

    return wrapper


# -- option parsing ---------------------------------------------------------------------------


def parse_range(text: str | None, name: str, cast: Callable = float) -> tuple | None:
    """``"0.1,0.5"`` -> (0.1, 0.5); ``"3"`` -> (3, 3). None stays None."""
    if text is None:
        return None
    parts = [p.strip() for p in str(text).replace(":", ",").split(",") if p.strip()]
    try:
        values = [cast(p) for p in parts]
    except ValueError:
        raise InputError(f"--{name} {text!r}: expected LOW,HIGH numbers") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise InputError(f"--{name} {text!r}: expected LOW,HIGH")
    if values[0] > values[1]:
        raise InputError(f"--{name} {text!r}: LOW is above HIGH")
    return tuple(values)


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (640, 480); ``"320"`` -> (320, 320)."""
    parts = str(text).lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 8:
        raise InputError(f"--size {text!r}: expected WIDTHxHEIGHT with both sides >= 8")
    return values[0], values[1]


def parse_count(text: str) -> int | None:
    """``"1000"`` -> 1000; ``"inf"`` -> None (endless)."""
    if str(text).lower() in ("inf", "infinite", "infinity"):
        return None
    try:
        value = int(str(text).replace("_", ""))
    except ValueError:
        raise InputError(f"--n {text!r}: expected a number of samples or 'inf'") from None
    if value < 1:
        raise InputError(f"--n {value}: give at least 1 sample, or inf")
    return value


def parse_list(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(p.strip() for p in str(text).split(",") if p.strip())


def parse_options(text: str | None) -> dict[str, str]:
    """``"margin=0.1,iterations=8"`` -> {"margin": "0.1", "iterations": "8"}."""
    options: dict[str, str] = {}
    for item in parse_list(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"segmenter option {item!r}: expected KEY=VALUE")
        options[key.strip().replace("-", "_")] = value.strip()
    return options
