"""``synthgen verify OUT``: check a finished output folder (one machine's or a whole cluster job's)
before training on it; exit status 1 when anything is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from synthgen.cli.common import console, friendly_errors, out_console


@friendly_errors
def verify(
    out: Path = typer.Argument(..., help="Output folder of `synthgen paste` (several machines' parts included)."),
    n: Optional[int] = typer.Option(None, "--n", help="Samples the job was to make (default: every sample up to the highest found)."),
    merge: bool = typer.Option(False, "--merge", help="COCO made by several machines: when all is well, join their annotation parts into annotations.json."),
    show: int = typer.Option(20, "--show", help="Print at most this many problems."),
) -> None:
    """Check that OUT is complete: every machine's part present, every shard or file readable, samples
    0..n-1 each exactly once, every sample's labels valid. Exit status 1 if not."""
    from synthgen.verify import verify_output

    report = verify_output(out, expected=n, merge=merge)
    machines = f" from {report.machines} machines" if report.machines > 1 else ""
    line = f"{report.format}: {report.samples:,} samples in {report.files:,} {'shards' if report.format == 'wds' else 'images'}{machines}"
    if report.ok:
        out_console.print(f"[green]ok[/] {escape(str(out))}: {line}")
        return
    for problem in report.problems[:show]:
        console.print(f"[red]problem:[/] {escape(problem)}")
    if len(report.problems) > show:
        console.print(f"... and {len(report.problems) - show} more problems")
    console.print(f"[bold red]{escape(str(out))} is not complete[/] ({line}; {len(report.problems)} problem{'' if len(report.problems) == 1 else 's'})")
    raise typer.Exit(1)
