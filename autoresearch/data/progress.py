"""Progress reporting for `prepare`: rich bars on a terminal, a few plain lines otherwise.

The data modules call `reporter.stage(description, total, unit)` and `advance(n)` on what it
returns; they never import rich themselves. With `show=False` nothing is printed at all.
Output goes to stderr so a script can still read the dataset path from stdout.

This is cosmetic: it does not protect against anything, and a failing terminal write is not
caught here.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class _Stage:
    """One unit of work with a known (or unknown) total, advanced from any thread."""

    def __init__(self, reporter: Reporter, description: str, total: float | None, unit: str):
        self.reporter = reporter
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0.0
        self._lock = threading.Lock()
        self._task_id = None
        self._started = time.perf_counter()

    def advance(self, amount: float = 1.0) -> None:
        with self._lock:
            self.done += amount
        if self._task_id is not None:
            self.reporter._rich.update(self._task_id, advance=amount)

    def set_total(self, total: float) -> None:
        self.total = total
        if self._task_id is not None:
            self.reporter._rich.update(self._task_id, total=total)


class Reporter:
    """Hands out stages; draws them with rich when stderr is a terminal."""

    def __init__(self, show: bool = True, fancy: bool | None = None):
        self.show = show
        self.fancy = show and (sys.stderr.isatty() if fancy is None else fancy)
        self._rich = None

    def note(self, message: str) -> None:
        if self.show:
            print(message, file=sys.stderr, flush=True)

    @contextmanager
    def stage(self, description: str, total: float | None = None, unit: str = "") -> Iterator[_Stage]:
        stage = _Stage(self, description, total, unit)
        if self.fancy:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
            columns.append(DownloadColumn() if unit == "B" else TextColumn("{task.completed:,.0f} " + unit))
            columns += [TimeElapsedColumn(), TimeRemainingColumn()]
            with Progress(*columns, transient=False, refresh_per_second=4) as progress:
                self._rich = progress
                stage._task_id = progress.add_task(description, total=total)
                try:
                    yield stage
                finally:
                    self._rich = None
            return
        yield stage
        if self.show:
            seconds = time.perf_counter() - stage._started
            amount = f" ({_human(stage.done, stage.unit)})" if stage.unit else ""
            print(f"{description}: done in {seconds:.1f}s{amount}", file=sys.stderr, flush=True)


def _human(amount: float, unit: str) -> str:
    if unit == "B":
        for suffix, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if amount >= scale:
                return f"{amount / scale:.1f} {suffix}"
        return f"{amount:.0f} B"
    return f"{amount:,.0f} {unit}"
