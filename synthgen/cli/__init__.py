"""The ``synthgen`` command line: small typer functions over the library, one module per command
group (:mod:`.paste`, :mod:`.look`, :mod:`.train`, :mod:`.models`), mounted here on one app.

Every command reads its defaults from ``synthgen.toml`` (see :mod:`synthgen.config`); errors a
user can fix are printed as one message, without a traceback, with a non-zero exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import typer.core

from synthgen import __version__
from synthgen.cli import insert, look, models, paste, redo, refine, train, verify
from synthgen.cli.common import active_config, friendly_errors, out_console

# typer writes `<bool>` as the value of every on/off flag in the help; a flag takes no value.
_display_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _display_type(self, ctx)

app = typer.Typer(
    name="synthgen",
    help="Unlimited, correctly boxed synthetic detection data from object images, and detector pretraining on it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        out_console.print(f"synthgen {__version__}")
        raise typer.Exit()


@app.callback()
@friendly_errors
def root(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help="Defaults file (default: ./synthgen.toml if present)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """synthgen: paste objects onto scenes for detection data; pretrain and finetune detectors on it."""
    from synthgen.config import default_map, load_config

    sections, source = load_config(config)
    active_config[:] = [source, sections]
    if not sections:
        return
    group = ctx.command
    commands: dict[str, set[str]] = {}
    repeatable: dict[str, set[str]] = {}
    groups: dict[str, set[str]] = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            groups[name] = set(command.commands)
            for sub_name, sub in command.commands.items():
                commands.setdefault(sub_name, {p.name for p in sub.params})
                repeatable.setdefault(sub_name, {p.name for p in sub.params if getattr(p, "multiple", False)})
        else:
            commands[name] = {p.name for p in command.params}
            repeatable[name] = {p.name for p in command.params if getattr(p, "multiple", False)}
    ctx.default_map = default_map(sections, commands, groups, source, repeatable)


app.command()(paste.paste)
app.command()(paste.segment)
app.command()(look.preview)
app.command()(look.stats)
app.command()(look.download)
app.command()(insert.insert)
app.command()(verify.verify)
app.command()(refine.refine)

# `synthgen pretrain|finetune|evaluate`, and the same commands under `synthgen train`, beside the
# trainers of the generative models.
train_group = typer.Typer(help="Training: detectors (pretrain, finetune, evaluate) and the generative models.", no_args_is_help=True)
for _name in ("pretrain", "finetune", "evaluate"):
    _command = friendly_errors(getattr(train, _name))
    app.command(_name)(_command)
    train_group.command(_name)(_command)
train_group.command("redo")(friendly_errors(redo.redo))
train_group.command("detectorgan")(insert.detectorgan)
train_group.command("mtgan")(refine.mtgan)
app.add_typer(train_group, name="train")
app.add_typer(models.app, name="models")


def main() -> None:
    app()
