"""history.py: what a run's records say, from hand-written records (no training, no git, no files).

Every expectation is written out by hand from the rules in the module docstrings; none is
computed with the code under test.
"""

from __future__ import annotations

import pytest

from autoresearch.history import (
    KIND_BASELINE,
    KIND_NOISE,
    KIND_PROPOSAL,
    Best,
    History,
    HistorySettings,
    RepairPlan,
    TrialSpec,
)
from autoresearch.ledger import CRASH, DISCARD, INTERRUPTED, KEEP, REJECTED, TIMEOUT, TrialRecord

SETTINGS = HistorySettings(seed=42, noise_runs=2, noise_sigmas=2.0, min_delta=0.0, max_repairs=2)
BASE = "b0" * 20  # the baseline commit


def record(trial: int, status: str, *, commit: str = "", val_bpb: float | None = None, seed: int = 42,
           **fields: object) -> TrialRecord:
    extra = dict(fields.pop("extra", {}) or {})  # type: ignore[call-overload]
    return TrialRecord(trial=trial, status=status, description=f"trial {trial}", parent=BASE, commit=commit,
                       started_at="2026-01-01T00:00:00+00:00", ended_at="2026-01-01T00:05:00+00:00",
                       val_bpb=val_bpb, seed=seed, extra=extra, **fields)  # type: ignore[arg-type]


def baseline(val_bpb: float = 1.0) -> TrialRecord:
    return record(0, KEEP, commit=BASE, val_bpb=val_bpb, extra={"baseline": True}, training_seconds=310.0)


def noise(trial: int, seed: int, status: str = DISCARD, val_bpb: float | None = None,
          training_seconds: float | None = None) -> TrialRecord:
    return record(trial, status, commit=BASE, val_bpb=val_bpb, seed=seed, extra={"noise_floor": True},
                  training_seconds=training_seconds)


def history(*records: TrialRecord, settings: HistorySettings = SETTINGS) -> History:
    return History.of(records, settings, BASE)


def test_before_the_baseline_the_next_trial_is_the_baseline_with_the_runs_seed() -> None:
    empty = history()
    assert empty.best == Best(None, BASE, None)
    assert empty.baseline_record() is None and empty.baseline_val_bpb() is None
    assert empty.next_trial() == 0
    assert empty.next_kind() == (KIND_BASELINE, 42)
    assert empty.pending_noise_seeds() == []
    assert empty.reference() == (None, "the baseline")
    assert empty.threshold().value == 0.0 and empty.threshold().std is None
    assert empty.noise_floor() is None and empty.repair_plan() is None


def test_noise_floor_with_a_failed_seed_runs_that_seed_again() -> None:
    run = history(baseline(), noise(1, 43, CRASH, training_seconds=12.0))
    assert run.best == Best(0, BASE, 1.0)
    assert run.pending_noise_seeds() == [43, 44]  # the crash did not measure seed 43
    assert run.next_kind() == (KIND_NOISE, 43)
    assert run.noise_failures(43) == 1 and run.noise_failures(44) == 0
    assert run.repair_plan() is None  # the baseline's own code: nobody's repair

    run = run.add(noise(2, 43, DISCARD, 1.002, training_seconds=302.0))
    assert run.pending_noise_seeds() == [44]
    assert run.next_kind() == (KIND_NOISE, 44) and run.next_trial() == 3
    assert run.next_spec() == TrialSpec(trial=3, kind=KIND_NOISE, seed=44, parent=BASE)
    assert run.noise_failures(43) == 1  # a failure stays counted after the seed scored

    run = run.add(noise(3, 44, INTERRUPTED, training_seconds=150.0))
    assert run.noise_failures(44) == 0  # an interruption is not a failure
    assert run.next_kind() == (KIND_NOISE, 44)

    run = run.add(noise(4, 44, DISCARD, 0.998, training_seconds=304.0))
    assert run.pending_noise_seeds() == []
    assert run.next_kind() == (KIND_PROPOSAL, 42) and run.next_trial() == 5
    assert run.baseline_runs() == [(42, 1.0), (43, 1.002), (44, 0.998)]
    # scores 1.000, 1.002, 0.998: mean 1.0, sample variance (0 + 0.002**2 + 0.002**2) / 2, std 0.002
    threshold = run.threshold()
    assert threshold.std == pytest.approx(0.002) and threshold.dof == 2
    assert threshold.value == pytest.approx(0.004)
    assert threshold.words == "keep threshold 0.004000 = 2 x noise std 0.002000 (2 degrees of freedom)"
    reference = run.reference()
    assert reference.val_bpb == pytest.approx(1.0) and reference.words == "the baseline's mean over 3 seeds"
    floor = run.noise_floor()
    assert floor is not None
    assert floor["seeds"] == [42, 43, 44] and floor["val_bpbs"] == [1.0, 1.002, 0.998]
    assert floor["dof"] == 2 and floor["keep_threshold"] == pytest.approx(0.004)
    # noise-floor runs measure the baseline: only the baseline counts toward --max-trials
    assert run.counted_trials() == 1
    # the warm start-ups' yardstick: the scored noise-floor runs' clocks (not the crash, not the interruption)
    assert run.noise_floor_training_seconds() == (302.0, 304.0)


def test_noise_floor_closes_once_a_proposal_was_recorded_but_not_for_an_interrupted_one() -> None:
    interrupted = record(2, INTERRUPTED, commit="c2")
    run = history(baseline(), noise(1, 43, DISCARD, 1.001), interrupted)
    assert run.pending_noise_seeds() == [44]  # the interrupted proposal never ran
    run = run.add(record(3, DISCARD, commit="c3", val_bpb=1.01))
    assert run.pending_noise_seeds() == []  # proposals started: the noise floor is what it is
    assert run.next_kind() == (KIND_PROPOSAL, 42)


def test_a_repair_chain_goes_back_to_its_first_crash_and_stops_after_max_repairs() -> None:
    run = history(baseline(), record(1, DISCARD, commit="c1", val_bpb=1.01))
    assert run.repair_plan() is None

    run = run.add(record(2, CRASH, commit="c2"))
    assert run.repair_plan() == RepairPlan(crashed_trial=2, crashed_commit="c2", attempt=1, last_trial=2,
                                           crash_log="train.log")
    run = run.add(record(3, CRASH, commit="c3", repair_attempt=1, extra={"crash_log": "confirm-1/train.log"}))
    assert run.repair_plan() == RepairPlan(crashed_trial=2, crashed_commit="c3", attempt=2, last_trial=3,
                                           crash_log="confirm-1/train.log")
    assert run.next_spec() == TrialSpec(trial=4, kind=KIND_PROPOSAL, seed=42, parent=BASE, repair_attempt=2)
    run = run.add(record(4, CRASH, commit="c4", repair_attempt=2))
    assert run.repair_plan() is None  # --max-repairs 2 spent: the next proposal is fresh
    assert run.next_kind() == (KIND_PROPOSAL, 42)

    fixed = history(baseline(), record(1, CRASH, commit="c1"), record(2, DISCARD, commit="c2", val_bpb=1.0,
                                                                       repair_attempt=1))
    assert fixed.repair_plan() is None  # the repair ran: nothing left to repair


def test_crashes_that_are_nobodys_repair() -> None:
    baseline_crash = record(0, CRASH, commit=BASE, extra={"baseline": True})
    assert history(baseline_crash).repair_plan() is None
    noise_crash = noise(1, 43, CRASH)
    assert history(baseline(), noise_crash).repair_plan() is None
    uncommitted = record(1, CRASH, commit="")
    assert history(baseline(), uncommitted).repair_plan() is None
    no_repairs = HistorySettings(seed=42, noise_runs=0, noise_sigmas=2.0, min_delta=0.0, max_repairs=0)
    assert history(baseline(), record(1, CRASH, commit="c1"), settings=no_repairs).repair_plan() is None
    timed_out = record(1, TIMEOUT, commit="c1")
    assert history(baseline(), timed_out).repair_plan() is None


def test_interrupted_trials_are_not_counted_as_tried() -> None:
    run = history(
        baseline(),
        record(1, DISCARD, commit="c1", val_bpb=1.01, train_py_sha256="aaa"),
        record(2, INTERRUPTED, commit="c2", train_py_sha256="bbb"),
        record(3, REJECTED, commit="c3", train_py_sha256="ccc"),
        record(4, DISCARD, commit="c4", val_bpb=1.02, train_py_sha256="aaa"),
        record(5, REJECTED, commit=""),  # rejected before a source existed
    )
    assert run.seen_sources() == {"aaa": 1, "ccc": 3}


def test_agent_errors_and_noise_runs_do_not_count_toward_max_trials_but_are_in_the_totals() -> None:
    run = history(
        baseline(),
        noise(1, 43, DISCARD, 1.001),
        noise(2, 44, DISCARD, 0.999),
        record(3, REJECTED, extra={"agent_error": True}, tokens={"input": 100}, cost_usd=0.25),
        record(4, DISCARD, commit="c4", val_bpb=1.01, tokens={"input": 1000, "output": 50}, cost_usd=0.5),
        record(5, INTERRUPTED, commit="c5"),
    )
    assert run.counted_trials() == 3  # the baseline, trial 4 and the interrupted trial 5
    assert run.cost_usd() == pytest.approx(0.75)
    totals = run.totals()
    assert totals == {"best_val_bpb": 1.0, "baseline_val_bpb": 1.0, "best_trial": 0,
                      "counts": {"keep": 1, "discard": 3, "crash": 0, "timeout": 0, "interrupted": 1, "rejected": 1},
                      "tokens": {"input": 1100, "output": 50}, "cost_usd": pytest.approx(0.75), "trials": 6}
    assert run.next_trial() == 6


def test_the_best_and_the_reference_in_words() -> None:
    lone = history(baseline(0.9979))
    assert lone.reference() == (0.9979, "the baseline")  # no noise floor: its one run

    kept_once = history(baseline(), record(1, KEEP, commit="c1", val_bpb=0.98, delta=-0.02))
    assert kept_once.best == Best(1, "c1", 0.98)
    assert kept_once.reference() == (0.98, "the best (trial 1)")  # kept with --confirm-runs 0: one run

    runs = [{"seed": 42, "val_bpb": 0.980}, {"seed": 1002, "val_bpb": 0.984}]
    confirmed = history(baseline(), record(1, DISCARD, commit="c1", val_bpb=1.01),
                        record(2, KEEP, commit="c2", val_bpb=0.982, delta=-0.018, extra={"runs": runs}))
    assert confirmed.best == Best(2, "c2", 0.982)
    value, words = confirmed.reference()
    assert value == pytest.approx(0.982) and words == "the best (trial 2)'s mean over 2 seeds"
    assert confirmed.score_groups()["c2"] == [(42, 0.980), (1002, 0.984)]
    assert confirmed.score_groups()["c1"] == [(42, 1.01)]
    assert confirmed.baseline_record() is not None and confirmed.baseline_record().trial == 0
    assert confirmed.baseline_val_bpb() == 1.0


def test_the_largest_kept_gain_leaves_out_the_baseline_and_what_was_not_kept() -> None:
    run = history(
        record(0, KEEP, commit=BASE, val_bpb=1.0, delta=-0.5, extra={"baseline": True}),  # a baseline's delta is no gain
        record(1, KEEP, commit="c1", val_bpb=0.981, delta=-0.019),
        record(2, DISCARD, commit="c2", val_bpb=0.95, delta=-0.031),
        record(3, KEEP, commit="c3", val_bpb=0.977, delta=-0.004),
    )
    assert run.largest_kept_gain() == pytest.approx(0.019)
    assert history(baseline()).largest_kept_gain() is None


def test_runs_that_did_not_score_are_not_in_the_score_groups() -> None:
    run = history(baseline(), noise(1, 43, DISCARD, 1.002),
                  record(2, REJECTED, commit=BASE, val_bpb=0.5, extra={"noise_floor": True}),  # a claim, rejected
                  record(3, CRASH, commit=BASE, extra={"noise_floor": True}))
    assert run.baseline_runs() == [(42, 1.0), (43, 1.002)]


def test_trials_in_flight_take_their_numbers_and_noise_seeds_until_recorded() -> None:
    run = history(baseline())
    assert run.pending_noise_seeds() == [43, 44]
    running = run.start(TrialSpec(trial=1, kind=KIND_NOISE, seed=43, parent=BASE))
    assert running.next_trial() == 2
    assert running.pending_noise_seeds() == [44]
    assert running.next_kind() == (KIND_NOISE, 44)
    assert run.in_flight == ()  # the history it came from is unchanged
    done = running.add(noise(1, 43, DISCARD, 1.001))
    assert done.in_flight == () and done.next_trial() == 2 and done.pending_noise_seeds() == [44]
    proposing = done.start(TrialSpec(trial=2, kind=KIND_PROPOSAL, seed=42, parent=BASE))
    assert proposing.pending_noise_seeds() == []  # a proposal started: the noise floor is closed


def test_settings_come_from_a_run_config() -> None:
    from pathlib import Path

    from autoresearch.runconfig import RunConfig

    config = RunConfig(project_dir=Path("."), tag="night", seed=7, noise_runs=3, noise_sigmas=2.5, min_delta=0.001, max_repairs=1)
    assert HistorySettings.of(config) == HistorySettings(seed=7, noise_runs=3, noise_sigmas=2.5, min_delta=0.001,
                                                         max_repairs=1)
