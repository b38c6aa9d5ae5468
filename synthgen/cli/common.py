"""What every command module of the CLI shares: the consoles, the error wrapper that turns a
SynthgenError into one line and an exit code, and the parsers of option values."""

from __future__ import annotations

import functools
from typing import Any, Callable

import typer
from rich.console import Console
from rich.markup import escape

from synthgen.errors import InputError, Interrupted, SynthgenError

console = Console(stderr=True)

#: The defaults file of this invocation and its tables, ``(path or None, {command: {...}})``, as
#: the root command read it (for messages about options that are missing).
active_config: list = [None, {}]
out_console = Console()


def friendly_errors(fn: Callable) -> Callable:
    """Print a SynthgenError as one line and exit with its code, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Interrupted as err:
            console.print(f"[yellow]stopped:[/] {escape(str(err))}")
            raise typer.Exit(err.exit_code) from None
        except SynthgenError as err:
            console.print(f"[bold red]error:[/] {escape(str(err))}")
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:  # a command without its own account of what it kept
            console.print("[yellow]stopped[/] by Ctrl-C before the command finished")
            raise typer.Exit(Interrupted.exit_code) from None

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
        raise InputError(f"--{name} {text!r}: expected MIN,MAX numbers, e.g. --{name} {_example(name)}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise InputError(f"--{name} {text!r}: expected MIN,MAX (two numbers, or one for both)")
    if values[0] > values[1]:
        raise InputError(f"--{name} {text!r}: MIN {values[0]:g} is above MAX {values[1]:g}; did you mean --{name} {values[1]:g},{values[0]:g}?")
    return tuple(values)


def _example(name: str) -> str:
    return {"objects-per-image": "1,5", "scale": "0.1,0.5", "box-scales": "0.04,0.5"}.get(name, "0.5,2")


class Problems:
    """Collects the errors of a command's settings, so that all of them are reported at once.

    ``check(fn, *args)`` runs one check and returns its value (None when it failed);
    :meth:`raise_all` raises one error listing every problem in the order they were checked
    (check the most fundamental first: inputs before flags), with the first one's exit code.
    """

    def __init__(self) -> None:
        self.errors: list[SynthgenError] = []

    def check(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SynthgenError as err:
            self.errors.append(err)
            return None

    def add(self, err: SynthgenError) -> None:
        """Record a problem found without a check function."""
        self.errors.append(err)

    def raise_all(self) -> None:
        if not self.errors:
            return
        if len(self.errors) == 1:
            raise self.errors[0]
        first = self.errors[0]
        error = type(first)(
            f"{len(self.errors)} problems with this command:\n"
            + "\n".join(f"  {number}. {err}" for number, err in enumerate(self.errors, start=1))
        )
        raise error


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


def require(command: str, **values: Any) -> None:
    """InputError when an option a command needs (``name=value``; None = not given) is missing,
    saying where defaults come from: ``synthgen.toml`` in the working folder (or ``--config``),
    whether one was found and what its ``[command]`` table lacks, and where to look next."""
    missing = [name for name, value in values.items() if value is None]
    if not missing:
        return
    from pathlib import Path

    from synthgen.config import CONFIG_NAME

    source, sections = active_config
    flags = " and ".join(f"--{name.replace('_', '-')}" for name in missing)
    keys = ", ".join(f"`{name.replace('_', '-')}`" for name in missing)
    if source is None:
        where = f"no {CONFIG_NAME} was found in the working folder {Path.cwd()}"
    elif command not in sections:
        where = f"{source} has no [{command}] table"
    else:
        where = f"the [{command}] table of {source} has no {keys}"
    raise InputError(
        f"synthgen {command} needs {flags}. Give {'them' if len(missing) > 1 else 'it'} on the command line, or "
        f"put {keys} in the [{command}] table of {CONFIG_NAME} in the working folder (or a file passed with "
        f"`synthgen --config FILE {command}`), where every command reads its defaults: {where}. "
        f"examples/faces/synthgen.toml in the synthgen repository is a complete one; `synthgen {command} --help` lists every option."
    )
