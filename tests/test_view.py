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


def phase_text(live: views.LiveView) -> str:
    panel = io.StringIO()
    Console(file=panel, width=120, color_system=None).print(live._render())
    return next(line for line in panel.getvalue().splitlines() if "phase" in line)


def test_live_view_names_noise_floor_and_confirmation_runs() -> None:
    # The messages the loop emits (loop.py: the TRIAL_STARTED label of a noise-floor trial, the note
    # before each confirmation run).
    assert views.trial_purpose("noise floor: baseline, seed 43") == "noise floor (seed 43)"
    assert views.trial_purpose("baseline") == "baseline"
    assert views.trial_purpose("proposing") is None and views.trial_purpose("repair 1 of trial 3") is None
    assert views.confirmation_purpose("candidate: confirming with seed 1045 (1 of 2)") == \
        "confirming (seed 1045, 1 of 2)"
    assert views.confirmation_purpose("killed the training left running by the previous session") is None
    stream = io.StringIO()
    live = views.LiveView(Console(file=stream, force_terminal=True, width=120, color_system=None))
    live.emit(Event(views.TRIAL_STARTED, 1, "noise floor: baseline, seed 43"))
    assert "noise floor (seed 43)" in phase_text(live) and "proposing" not in phase_text(live)
    live.emit(Event(views.TRAINING, 1, "noise floor: baseline, seed 43 (abc1234, seed 43)"))
    live.emit(Event(views.PROGRESS, 1, data={"step": 7, "percent": 50, "loss": 2.5, "remaining": 5, "elapsed": 5}))
    assert "training, noise floor (seed 43)" in phase_text(live)
    panel = io.StringIO()
    Console(file=panel, width=120, color_system=None).print(live._render())
    assert "step 7" in panel.getvalue()  # the progress row still shows while training a noise run
    live.emit(Event(views.TRIAL_FINISHED, 1, "discard", {"record": RECORD, "totals": TOTALS}))
    live.emit(Event(views.TRIAL_STARTED, 2, "proposing"))
    assert "proposing" in phase_text(live)
    live.emit(Event(views.PROPOSAL, 2, "MATRIX_LR 0.04 -> 0.05", {"description": "MATRIX_LR 0.04 -> 0.05"}))
    live.emit(Event(views.TRAINING, 2, "MATRIX_LR 0.04 -> 0.05 (abc1234)"))
    assert "phase  training (" in phase_text(live)  # a proposal's first run: no purpose
    live.emit(Event(views.NOTE, 2, "candidate: confirming with seed 1045 (1 of 1)"))
    assert "confirming (seed 1045, 1 of 1)" in phase_text(live)
    live.emit(Event(views.TRAINING, 2, "MATRIX_LR 0.04 -> 0.05 (abc1234, seed 1045)"))
    assert "training, confirming (seed 1045, 1 of 1)" in phase_text(live)
    live.close()
    assert "candidate: confirming with seed 1045" in stream.getvalue()  # the note is still printed
