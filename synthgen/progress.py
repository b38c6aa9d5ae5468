"""The one progress display of synthgen: a rich bar with count, rate, elapsed time and ETA, on
stderr so that it never mixes with data a command writes to stdout."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """``123 samples/s``: the task's current speed in ``unit`` per second."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text(f"- {self.unit}/s", style="progress.data.speed")
        return Text(f"{speed:,.{0 if speed >= 10 else 1}f} {self.unit}/s", style="progress.data.speed")


def progress_bar(unit: str, enabled: bool = True, console: Console | None = None, extra: tuple[ProgressColumn, ...] = ()) -> Progress:
    """A rich Progress for counting ``unit`` (samples, objects, images, steps). Tasks with
    ``total=None`` (endless runs) show a pulsing bar and no ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        *extra,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        disable=not enabled,
    )
