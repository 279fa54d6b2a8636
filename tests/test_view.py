"""The run's terminal views: one plain line per event in a pipe, a live panel in a terminal."""

from __future__ import annotations

import io

from rich.console import Console

from autoresearch import view as views
from autoresearch.view import Event

TOTALS = {"best_val_bpb": 0.95, "baseline_val_bpb": 1.0, "counts": {"keep": 2, "discard": 1, "crash": 0},
          "tokens": {"input": 1200, "output": 300}, "cost_usd": 0.42}
RECORD = {"trial": 3, "status": "discard", "val_bpb": 0.97, "delta": 0.02, "description": "DEPTH 8 -> 10",
          "decision": "0.970000 is not below best 0.950000"}


def events() -> list[Event]:
    return [
        Event(views.RUN_STARTED, message="starting run t", data={"tag": "t", "totals": TOTALS}),
        Event(views.TRIAL_STARTED, 3, "proposing"),
        Event(views.PROPOSAL, 3, "DEPTH 8 -> 10", {"description": "DEPTH 8 -> 10"}),
        Event(views.TRAINING, 3, "DEPTH 8 -> 10 (abc1234)"),
        *[Event(views.PROGRESS, 3, data={"step": s, "percent": s, "loss": 3.0 - s / 100, "remaining": 100 - s,
                                          "elapsed": s}) for s in range(1, 50)],
        Event(views.EVALUATING, 3, "scoring val_bpb"),
        Event(views.TRIAL_FINISHED, 3, "discard", {"record": RECORD, "totals": TOTALS}),
        Event(views.RUN_STOPPED, message="reached --max-trials 4",
              data={"status": "finished", "stop_reason": "reached --max-trials 4", "totals": TOTALS}),
    ]


def test_plain_view_prints_one_line_per_event_and_throttles_progress() -> None:
    stream = io.StringIO()
    plain = views.PlainView(stream, progress_every=3600)
    for event in events():
        plain.emit(event)
    lines = stream.getvalue().splitlines()
    assert sum("step" in line for line in lines) <= 1  # 49 progress events, at most one line
    finished = next(line for line in lines if "trial 0003 discard" in line)
    assert "0.970000 (+0.020000)" in finished and "DEPTH 8 -> 10" in finished and "not below best" in finished
    assert any("best 0.950000 (-0.050000 vs baseline) | discard 1 keep 2 | tokens 1,500 | $0.42" in line
               for line in lines)
    assert lines[-2].endswith("run finished: reached --max-trials 4")


def test_live_view_draws_the_current_trial_and_the_totals() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=120, color_system=None)
    live = views.LiveView(console)
    rendered = []
    for event in events()[:-2]:
        live.emit(event)
        rendered.append(live._render())
    training_panel = io.StringIO()
    Console(file=training_panel, width=120, color_system=None).print(rendered[-2])
    text = training_panel.getvalue()
    assert "0003  DEPTH 8 -> 10" in text and "step 49" in text and "51s left" in text
    assert "best 0.950000 (-0.050000 vs baseline)" in text
    for event in events()[-2:]:
        live.emit(event)
    live.close()
    assert "trial 0003 discard" in stream.getvalue()


def test_make_view_picks_plain_for_a_pipe() -> None:
    assert isinstance(views.make_view(io.StringIO()), views.PlainView)
