"""What a person watching `autoresearch run` sees: a live terminal view, or one plain line per event.

The loop knows nothing about terminals: it calls `emit(Event)` on whatever view it was given.
`LiveView` (a terminal) keeps a rich panel with the current trial (number, description, phase,
training step, loss and time left), the best val_bpb and its gain over the baseline, the
keep/discard/crash counts and the agent's tokens and cost, and prints one permanent line per
finished trial above it. `PlainView` (a pipe or a file) prints one line per event, progress at
most every `progress_every` seconds. `NullView` swallows everything (tests, benchmarks).

What a trial is for (baseline, noise floor and its seed, a confirmation run and its index) is read
from the events' data, set where the loop emits them, never parsed out of their messages.

This module only displays; nothing it does changes a run, and an exception while drawing is the
caller's bug, not a recorded failure.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from autoresearch.history import KIND_BASELINE, KIND_NOISE

# Event kinds, in the order a trial emits them.
RUN_STARTED = "run_started"
TRIAL_STARTED = "trial_started"  # data: trial_kind (history.KIND_*), seed, repair_attempt (0: not a repair), repairs_trial
PROPOSAL = "proposal"  # the agent finished (data: description, agent_seconds)
PROPOSAL_INVALID = "proposal_invalid"  # goes back to the agent (data: reason, attempt)
TRAINING = "training"
PROGRESS = "progress"  # data: step, percent, loss, remaining, elapsed
EVALUATING = "evaluating"
TRIAL_FINISHED = "trial_finished"  # data: record (dict), totals (dict)
NOTE = "note"  # before a confirmation run, data: confirmation (its index, from 1), confirmations, seed
RUN_STOPPED = "run_stopped"  # data: status, stop_reason, totals


@dataclass
class Event:
    kind: str
    trial: int | None = None
    message: str = ""
    data: dict = field(default_factory=dict)


def trial_purpose(data: dict) -> str | None:
    """What a trial that is not a proposal is for, from its TRIAL_STARTED data: "baseline" or
    "noise floor (seed N)"; None for a proposal (a repair is a proposal too)."""
    kind = data.get("trial_kind")
    if kind == KIND_BASELINE:
        return "baseline"
    if kind == KIND_NOISE:
        return f"noise floor (seed {data.get('seed')})"
    return None


def confirmation_purpose(data: dict) -> str | None:
    """ "confirming (seed N, i of n)" from the data of the loop's note before a confirmation run; None otherwise."""
    index = data.get("confirmation")
    if index is None:
        return None
    return f"confirming (seed {data.get('seed')}, {index} of {data.get('confirmations')})"


class View(Protocol):
    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class NullView:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


def _bpb(value: float | None) -> str:
    return "—" if value is None else f"{value:.6f}"


def _totals_line(totals: dict) -> str:
    counts = totals.get("counts", {})
    best, baseline = totals.get("best_val_bpb"), totals.get("baseline_val_bpb")
    gain = "" if best is None or baseline is None else f" ({best - baseline:+.6f} vs baseline)"
    counted = " ".join(f"{name} {counts[name]}" for name in sorted(counts) if counts[name])
    tokens = totals.get("tokens", {})
    used = sum(tokens.values()) if tokens else 0
    cost = totals.get("cost_usd", 0.0)
    return f"best {_bpb(best)}{gain} | {counted or 'no trials yet'} | tokens {used:,} | ${cost:.2f}"


def _trial_line(record: dict) -> str:
    status = record.get("status", "?")
    value = record.get("val_bpb")
    delta = record.get("delta")
    numbers = _bpb(value) + ("" if delta is None else f" ({delta:+.6f})")
    why = record.get("failure_reason") or record.get("decision") or ""
    return f"trial {record.get('trial', 0):04d} {status:<11} {numbers:<22} {record.get('description', '')}" + \
        (f" — {why}" if why and status != "keep" else "")


class PlainView:
    """One line per event, for logs and pipes."""

    def __init__(self, stream: TextIO | None = None, progress_every: float = 10.0):
        self.stream = stream or sys.stdout
        self.progress_every = progress_every
        self._last_progress = 0.0

    def _print(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.stream.write(f"[{stamp}] {text}\n")
        self.stream.flush()

    def emit(self, event: Event) -> None:
        data = event.data
        if event.kind == PROGRESS:
            now = time.monotonic()
            if now - self._last_progress < self.progress_every:
                return
            self._last_progress = now
            self._print(f"trial {event.trial:04d} step {data['step']} ({data['percent']:.0f}%) "
                        f"loss {data['loss']:.4f}, {data['remaining']:.0f}s left")
        elif event.kind == TRIAL_FINISHED:
            self._print(_trial_line(data["record"]))
            self._print("  " + _totals_line(data["totals"]))
        elif event.kind == RUN_STARTED:
            self._print(event.message)
            self._print("  " + _totals_line(data.get("totals", {})))
        elif event.kind == RUN_STOPPED:
            self._print(f"run {data.get('status')}: {data.get('stop_reason')}")
            self._print("  " + _totals_line(data.get("totals", {})))
        elif event.kind == TRAINING:
            self._last_progress = time.monotonic()
            self._print(f"trial {event.trial:04d} training: {event.message}")
        elif event.kind == TRIAL_STARTED:
            self._print(f"trial {event.trial:04d} started: {event.message}")
        else:
            prefix = f"trial {event.trial:04d} " if event.trial is not None else ""
            self._print(f"{prefix}{event.message}" if event.kind in (NOTE, PROPOSAL_INVALID) else
                        f"{prefix}{event.kind.replace('_', ' ')}: {event.message}".rstrip(": "))

    def close(self) -> None:
        pass


class LiveView:
    """A rich.live panel for a terminal; finished trials scroll above it."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console()
        self.state: dict = {"trial": None, "description": "", "phase": "starting", "purpose": None, "progress": None,
                            "totals": {}, "title": "autoresearch", "phase_started": time.monotonic()}
        self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True,
                         get_renderable=self._render)
        self.live.start()

    def _render(self):
        from rich.panel import Panel
        from rich.table import Table

        state = self.state
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        trial = state["trial"]
        grid.add_row("trial", "—" if trial is None else f"{trial:04d}  {state['description']}")
        waited = time.monotonic() - state["phase_started"]
        grid.add_row("phase", f"{state['phase']} ({waited:.0f}s)")
        progress = state["progress"]
        if progress and state["phase"].startswith("training"):
            grid.add_row("training", f"step {progress['step']}  loss {progress['loss']:.4f}  "
                                     f"{progress['percent']:.0f}%  {progress['remaining']:.0f}s left")
        grid.add_row("run", _totals_line(state["totals"]))
        return Panel(grid, title=state["title"], border_style="cyan")

    def emit(self, event: Event) -> None:
        state, data = self.state, event.data
        if event.kind == PROGRESS:
            state["progress"] = data
            return
        if "totals" in data:
            state["totals"] = data["totals"]
        if event.kind == RUN_STARTED:
            state["title"] = f"autoresearch {data.get('tag', '')}"
            self.console.print(event.message)
        elif event.kind == TRIAL_STARTED:
            purpose = trial_purpose(data)
            state.update(trial=event.trial, description=event.message, progress=None, purpose=purpose)
            self._phase(purpose or "proposing")
        elif event.kind == PROPOSAL:
            state["description"] = data.get("description", state["description"])
        elif event.kind in (TRAINING, EVALUATING):
            doing = "training" if event.kind == TRAINING else "evaluating"
            purpose = state["purpose"] if event.trial is not None else None  # the holdout has no trial
            self._phase(f"{doing}, {purpose}" if purpose else doing)
        elif event.kind == TRIAL_FINISHED:
            self.console.print(_trial_line(data["record"]))
            state["purpose"] = None
            self._phase("between trials")
        elif event.kind in (NOTE, PROPOSAL_INVALID):
            confirming = confirmation_purpose(data) if event.kind == NOTE else None
            if confirming:
                state["purpose"] = confirming
                self._phase(confirming)
            prefix = f"trial {event.trial:04d} " if event.trial is not None else ""
            self.console.print(f"[dim]{prefix}{event.message}[/dim]")
        elif event.kind == RUN_STOPPED:
            self.console.print(f"run {data.get('status')}: {data.get('stop_reason')}")
            self.console.print(_totals_line(data.get("totals", {})))
        self.live.refresh()

    def _phase(self, phase: str) -> None:
        self.state["phase"], self.state["phase_started"] = phase, time.monotonic()

    def close(self) -> None:
        self.live.stop()


def make_view(stream: TextIO | None = None) -> View:
    """A LiveView on a terminal, a PlainView otherwise."""
    stream = stream or sys.stdout
    if stream.isatty():
        return LiveView()
    return PlainView(stream)
