"""The run's terminal views: one plain line per event in a pipe, a live panel in a terminal."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from run_fixtures import ScriptedProposer, insert_code, make_project, night_config, sealed_copy, set_knob

from autoresearch import ledger
from autoresearch import view as views
from autoresearch.history import KIND_BASELINE, KIND_NOISE, KIND_PROPOSAL
from autoresearch.loop import run_night
from autoresearch.view import Event, NullView

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


NOISE_STARTED = {"trial_kind": KIND_NOISE, "seed": 43, "repair_attempt": 0, "repairs_trial": None}
CONFIRMING = {"confirmation": 1, "confirmations": 2, "seed": 1045}


def test_what_a_trial_is_for_comes_from_the_event_data_not_its_message() -> None:
    # The data the loop sets on TRIAL_STARTED and on the note before each confirmation run (loop.py).
    assert views.trial_purpose(NOISE_STARTED) == "noise floor (seed 43)"
    assert views.trial_purpose({"trial_kind": KIND_BASELINE, "seed": 42}) == "baseline"
    assert views.trial_purpose({"trial_kind": KIND_PROPOSAL, "seed": 42, "repair_attempt": 0}) is None
    assert views.trial_purpose({"trial_kind": KIND_PROPOSAL, "seed": 42, "repair_attempt": 1, "repairs_trial": 3}) is None
    assert views.confirmation_purpose(CONFIRMING) == "confirming (seed 1045, 1 of 2)"
    assert views.confirmation_purpose({}) is None
    # A message that reads like one of those, without the data, is only a message.
    stream = io.StringIO()
    live = views.LiveView(Console(file=stream, force_terminal=True, width=120, color_system=None))
    live.emit(Event(views.TRIAL_STARTED, 1, "noise floor: baseline, seed 43"))
    assert "proposing" in phase_text(live) and "noise floor (seed" not in phase_text(live)
    live.emit(Event(views.NOTE, 1, "candidate: confirming with seed 1045 (1 of 2)"))
    assert "confirming (seed" not in phase_text(live)
    live.close()


def test_live_view_names_noise_floor_and_confirmation_runs() -> None:
    stream = io.StringIO()
    live = views.LiveView(Console(file=stream, force_terminal=True, width=120, color_system=None))
    live.emit(Event(views.TRIAL_STARTED, 1, "noise floor: baseline, seed 43", NOISE_STARTED))
    assert "noise floor (seed 43)" in phase_text(live) and "proposing" not in phase_text(live)
    live.emit(Event(views.TRAINING, 1, "noise floor: baseline, seed 43 (abc1234, seed 43)"))
    live.emit(Event(views.PROGRESS, 1, data={"step": 7, "percent": 50, "loss": 2.5, "remaining": 5, "elapsed": 5}))
    assert "training, noise floor (seed 43)" in phase_text(live)
    panel = io.StringIO()
    Console(file=panel, width=120, color_system=None).print(live._render())
    assert "step 7" in panel.getvalue()  # the progress row still shows while training a noise run
    live.emit(Event(views.TRIAL_FINISHED, 1, "discard", {"record": RECORD, "totals": TOTALS}))
    live.emit(Event(views.TRIAL_STARTED, 2, "proposing", {"trial_kind": KIND_PROPOSAL, "seed": 42, "repair_attempt": 0}))
    assert "proposing" in phase_text(live)
    live.emit(Event(views.PROPOSAL, 2, "MATRIX_LR 0.04 -> 0.05", {"description": "MATRIX_LR 0.04 -> 0.05"}))
    live.emit(Event(views.TRAINING, 2, "MATRIX_LR 0.04 -> 0.05 (abc1234)"))
    assert "phase  training (" in phase_text(live)  # a proposal's first run: no purpose
    live.emit(Event(views.NOTE, 2, "candidate: confirming with seed 1045 (1 of 1)",
                    {"confirmation": 1, "confirmations": 1, "seed": 1045}))
    assert "confirming (seed 1045, 1 of 1)" in phase_text(live)
    live.emit(Event(views.TRAINING, 2, "MATRIX_LR 0.04 -> 0.05 (abc1234, seed 1045)"))
    assert "training, confirming (seed 1045, 1 of 1)" in phase_text(live)
    live.close()
    assert "candidate: confirming with seed 1045" in stream.getvalue()  # the note is still printed


# --- The data a real night puts on its events ----------------------------------------------------

CRASH_LINE = 'raise RuntimeError("planted crash")'


@pytest.mark.slow
def test_a_real_night_carries_the_kind_of_each_trial_on_its_events(tmp_path, tiny_dataset) -> None:
    """Baseline, noise floor, a crash, its repair and a confirmation run: each named by its events' data."""
    project = make_project(tmp_path)

    def crash(context) -> str:
        set_knob("MATRIX_LR", 0.03)(context)
        insert_code(CRASH_LINE, "", at_top=True)(context)
        return "MATRIX_LR 0.005 -> 0.03"

    def repair(context) -> str:
        path = context.worktree / "train.py"
        path.write_text(path.read_text().replace(CRASH_LINE + "\n", ""))
        return "MATRIX_LR 0.005 -> 0.03 (repaired)"

    recorded = NullView()
    config = night_config(project, sealed_copy(tiny_dataset, tmp_path / "data"), max_trials=3, noise_runs=1,
                          confirm_runs=1)
    outcome = run_night(config, proposer=ScriptedProposer([crash, repair]), view=recorded, handle_signals=False)
    assert outcome.exit_code == 0
    records = {record.trial: record for record in ledger.read_trials(project / "runs" / "t").records}
    started = {event.trial: event.data for event in recorded.events if event.kind == views.TRIAL_STARTED}
    assert started[0]["trial_kind"] == KIND_BASELINE and started[0]["repair_attempt"] == 0
    assert started[1]["trial_kind"] == KIND_NOISE and started[1]["seed"] == records[1].seed != records[0].seed
    assert started[2]["trial_kind"] == KIND_PROPOSAL and started[2]["repair_attempt"] == 0
    assert records[2].status == "crash"
    assert started[3] == {"trial_kind": KIND_PROPOSAL, "seed": records[3].seed, "repair_attempt": 1,
                          "repairs_trial": 2}
    confirmed = [trial for trial, record in records.items() if len(record.extra.get("runs", [])) > 1]
    assert confirmed, "no trial went to a confirmation run; the night does not test the confirmation's data"
    for trial in confirmed:
        notes = [event.data for event in recorded.events if event.kind == views.NOTE and event.trial == trial
                 and "confirmation" in event.data]
        seeds = [run["seed"] for run in records[trial].extra["runs"][1:]]
        assert notes == [{"confirmation": index, "confirmations": len(seeds), "seed": seed}
                         for index, seed in enumerate(seeds, start=1)]

    # The live view, fed the night's events, names each kind of trial from that data.
    live = views.LiveView(Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None))
    phases = {}
    for event in recorded.events:
        live.emit(event)
        if event.kind == views.TRAINING:
            phases.setdefault(event.trial, []).append(phase_text(live))
    live.close()
    assert "training, baseline" in phases[0][0]
    assert f"training, noise floor (seed {records[1].seed})" in phases[1][0]
    for trial in confirmed:
        assert f"training, confirming (seed {records[trial].extra['runs'][1]['seed']}, 1 of" in phases[trial][1]
