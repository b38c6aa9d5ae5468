"""Defaults from ``synthgen.toml``.

A configured experiment is a ``synthgen.toml`` in the working directory with one table per
command; keys are the command's long option names (``exclude-classes`` or ``exclude_classes``).
Flags given on the command line override the file::

    [paste]
    objects = "data/faces"
    backgrounds = "voc"
    format = "wds"
    n = 200000

    [pretrain]
    data = "out/shard-{000000..000199}.tar"
    steps = 20000

``synthgen train pretrain`` reads the same ``[pretrain]`` table as ``synthgen pretrain``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from synthgen.errors import InputError

CONFIG_NAME = "synthgen.toml"


def load_config(path: Path | None) -> tuple[dict[str, dict[str, Any]], Path | None]:
    """Read the config file: ``path`` if given (it must exist), else ``./synthgen.toml`` if present.

    Returns ``({command: {param_name: value}}, file used or None)``.
    """
    if path is None:
        candidate = Path.cwd() / CONFIG_NAME
        if not candidate.is_file():
            return {}, None
        path = candidate
    elif not path.is_file():
        raise InputError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid TOML: {err}") from None
    sections: dict[str, dict[str, Any]] = {}
    for command, table in data.items():
        if not isinstance(table, dict):
            raise InputError(f"{path}: top-level key {command!r} must be a table like [{command}]")
        sections[command] = {key.replace("-", "_"): value for key, value in table.items()}
    return sections, path


def default_map(
    sections: dict[str, dict[str, Any]],
    commands: dict[str, set[str]],
    groups: dict[str, set[str]],
    source: Path,
    repeatable: dict[str, set[str]] | None = None,
) -> dict[str, Any]:
    """Turn config sections into click's ``default_map``, checking every key.

    ``commands`` maps top-level command names to their parameter names; ``groups`` maps group
    names (``train``) to the command names they hold, which read the same section;
    ``repeatable`` names each command's repeatable options, whose value is a list (a single
    value or a TOML array) rather than a "LOW,HIGH" string.
    """
    result: dict[str, Any] = {}
    for command, values in sections.items():
        if command not in commands:
            raise InputError(f"{source}: [{command}] is not a synthgen command; known: {', '.join(sorted(commands))}")
        unknown = sorted(set(values) - commands[command])
        if unknown:
            known = ", ".join(sorted(name.replace("_", "-") for name in commands[command]))
            raise InputError(f"{source}: [{command}] has unknown settings {', '.join(unknown)}; known: {known}")
        result[command] = _as_click_values(values, (repeatable or {}).get(command, set()))
    for group, members in groups.items():
        nested = {name: result[name] for name in members if name in result}
        if nested:
            result[group] = nested
    return result


def _as_click_values(values: dict[str, Any], repeatable: set[str]) -> dict[str, Any]:
    # Options that take "LOW,HIGH" strings may be written as TOML arrays; repeatable ones take a list.
    def convert(key: str, v: Any) -> Any:
        if key in repeatable:
            return v if isinstance(v, list) else [v]
        if isinstance(v, list) and all(not isinstance(x, (list, dict)) for x in v):
            return ",".join(str(x) for x in v)
        return v

    return {k: convert(k, v) for k, v in values.items()}
