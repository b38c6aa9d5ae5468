"""The one progress display of synthgen: a rich bar with count, rate, elapsed time and ETA, on
stderr so that it never mixes with data a command writes to stdout. When stderr is not a terminal
(``nohup``, CI, a pipe into a log) a live bar cannot be drawn: :class:`LineProgress` prints a
plain line every so many units or seconds instead."""

from __future__ import annotations

import time
from typing import Any

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


def progress_bar(
    unit: str,
    enabled: bool = True,
    console: Console | None = None,
    extra: tuple[ProgressColumn, ...] = (),
    every: int | None = None,
    interval: float = 30.0,
) -> Progress | LineProgress:
    """A rich Progress for counting ``unit`` (samples, objects, images, steps). Tasks with
    ``total=None`` (endless runs) show a pulsing bar and no ETA. On a console that is not a
    terminal, a :class:`LineProgress` (same calls) that prints a line every ``every`` units
    (default: a twentieth of the total) or ``interval`` seconds, whichever comes first; its
    lines show the task's fields (``loss=...``) where the bar has ``extra`` columns."""
    console = console or Console(stderr=True)
    if enabled and not console.is_terminal:
        return LineProgress(unit, console, every=every, interval=interval)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        *extra,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class LineProgress:
    """What :func:`progress_bar` gives when the output is a log, not a terminal: the calls of
    rich's Progress that synthgen uses (``add_task``, ``advance``, ``update``, as a context
    manager), printing ``description: done/total unit, rate unit/s, elapsed, eta, fields``."""

    def __init__(self, unit: str, console: Console, every: int | None = None, interval: float = 30.0) -> None:
        self.unit, self.console, self.every, self.interval = unit, console, every, interval
        self.tasks: list[dict[str, Any]] = []

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        for number, task in enumerate(self.tasks):
            if task["completed"] != task["printed"]:
                self._print(number)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields: Any) -> int:
        now = time.perf_counter()
        every = self.every or (max(1, int(total) // 20) if total else 1000)
        self.tasks.append(dict(description=description, total=total, completed=completed, start=completed,
                               started=now, printed=completed, printed_at=now, every=every, fields=fields))
        return len(self.tasks) - 1

    def update(self, task_id: int, *, advance: float = 0, completed: float | None = None, total: float | None = None, **fields: Any) -> None:
        task = self.tasks[task_id]
        task["fields"].update(fields)
        if total is not None:
            task["total"] = total
        if completed is not None:
            task["completed"] = completed
        if advance:
            self.advance(task_id, advance)

    def advance(self, task_id: int, advance: float = 1) -> None:
        task = self.tasks[task_id]
        task["completed"] += advance
        now = time.perf_counter()
        if task["completed"] - task["printed"] >= task["every"] or now - task["printed_at"] >= self.interval \
                or (task["total"] is not None and task["completed"] >= task["total"]):
            self._print(task_id)

    def _print(self, task_id: int) -> None:
        task = self.tasks[task_id]
        now = time.perf_counter()
        elapsed = now - task["started"]
        done = task["completed"] - task["start"]
        rate = done / elapsed if elapsed > 0 else 0.0
        total = task["total"]
        parts = [f"{task['description']}: {task['completed']:,.0f}" + (f"/{total:,.0f}" if total is not None else "") + f" {self.unit}"]
        parts.append(f"{rate:,.{0 if rate >= 10 else 2}f} {self.unit}/s")
        parts.append(f"elapsed {_clock(elapsed)}")
        if total is not None and rate > 0:
            parts.append(f"eta {_clock(max(0.0, total - task['completed']) / rate)}")
        parts += [f"{key} {value}" for key, value in task["fields"].items() if value not in ("", "-", None)]
        self.console.print(", ".join(parts), markup=False, highlight=False, soft_wrap=True)
        task["printed"], task["printed_at"] = task["completed"], now
