"""decide.py: judging a run and deciding keep or discard, from values (no training, no evaluator, no git).

The words are written out by hand: they are what the records and the agent read, so a change
of wording shows here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from autoresearch import decide, runner, trust
from autoresearch.history import KIND_BASELINE, KIND_NOISE, KIND_PROPOSAL, History, HistorySettings, Reference
from autoresearch.integrity import Change
from autoresearch.ledger import CRASH, DISCARD, INTERRUPTED, KEEP, REJECTED, TIMEOUT, TrialRecord


@dataclass
class Evaluation:  # the fields of evaluate.py's result that the judge reads
    ok: bool
    bpb: float | None = None
    failure_kind: str | None = None
    reason: str | None = None


def trained(status: str = runner.OK, seconds: float = 305.0, reason: str | None = None,
            summary: dict | None = None) -> runner.TrainingResult:
    return runner.TrainingResult(status, seconds, 0 if status == runner.OK else 1, reason, dict(summary or {}))


def judge(training: runner.TrainingResult, evaluation: Evaluation | None = None, changes: list | None = None,
          tracked: list[str] | None = None, kind: str = KIND_PROPOSAL,
          baseline_seconds: float | None = 310.0) -> decide.Failure | None:
    return decide.judge(training, evaluation, changes or [], tracked or [], kind,
                        decide.StartUp(baseline_seconds, (), cold=False, budget=300.0, tolerance=30.0))


SCORED = Evaluation(ok=True, bpb=1.0)


# --- judge --------------------------------------------------------------------------------------


def test_a_clean_run_counts() -> None:
    assert judge(trained(summary={"val_bpb": "nan"}), SCORED) is None


def test_integrity_comes_first_and_an_unrestorable_change_stops_the_run() -> None:
    worktree = Change("worktree", Path("prepare.py"), "prepare.py")
    failure = judge(trained(runner.CRASH, reason="boom"), None, [worktree], ["README.md"])
    assert failure is not None and failure.status == REJECTED  # not the crash: the measurement broke first
    assert failure.reason == "integrity: train.py modified prepare.py, README.md"
    assert failure.note == "Worktree files were restored; train.py must not change other files."
    assert "stops_run" not in failure.extra
    tracked_only = judge(trained(), SCORED, [], ["README.md"])  # a tracked file the guard does not fingerprint
    assert tracked_only is not None and tracked_only.reason == "integrity: train.py modified README.md"

    dataset = Change("dataset", Path("/data/val.bin"), "val.bin")
    failure = judge(trained(), SCORED, [dataset])
    assert failure is not None and failure.reason == "integrity: train.py modified val.bin"
    assert failure.extra["stops_run"] == (
        "integrity: train.py modified val.bin: the harness or the dataset can no longer be trusted; reinstall "
        "autoresearch or re-run `autoresearch prepare`, then resume")


def test_how_training_ended() -> None:
    read_val = judge(trained(runner.INTEGRITY, reason="integrity: opened val.bin"))
    assert (read_val.status, read_val.reason, read_val.note) == (
        REJECTED, "integrity: opened val.bin", "train.py may read only the train split.")
    timeout = judge(trained(runner.TIMEOUT, reason=None))
    assert (timeout.status, timeout.reason, timeout.note) == (TIMEOUT, "timeout", None)
    crash = judge(trained(runner.CRASH, reason="exit code 1: ValueError"))
    assert (crash.status, crash.reason, crash.extra) == (CRASH, "exit code 1: ValueError", {"crash_log": "train.log"})


def test_start_up_beyond_the_baselines_plus_the_tolerance_is_rejected() -> None:
    # no noise-floor run: the baseline's start-up, 310 - 300 = 10 s, plus --overhead-tolerance 30 s: 40 s allowed
    assert judge(trained(seconds=340.0), SCORED) is None
    late = judge(trained(seconds=340.5), SCORED)
    assert late is not None and late.status == REJECTED
    assert late.reason == ("time: train.py's process ran 340.5 s, 40.5 s beyond its 300 s budget, more than the "
                           "40.0 s allowed: compared with the baseline's cold start-up of 10.0 s (fresh compile "
                           "cache); the tolerance is 30 s (--overhead-tolerance). Training work outside the budget's "
                           "clock (before its timer starts, or after it ends) does not count")
    assert late.note == "Do all training inside TIME_BUDGET, measured from the start of the run."
    assert judge(trained(seconds=400.0), SCORED, kind=KIND_BASELINE) is None  # the baseline is the yardstick
    assert judge(trained(seconds=400.0), SCORED, baseline_seconds=None) is None  # no yardstick yet
    assert decide.overhead_failure(trained(runner.CRASH, seconds=900.0), KIND_PROPOSAL,
                                   decide.StartUp(310.0, (), False, 300.0, 30.0)) is None  # judged as a crash


def test_start_up_is_compared_with_the_warm_runs_or_for_a_changed_compile_with_the_cold_one() -> None:
    # the baseline started cold in 60 s; its noise-floor runs warm in 8, 9 and 10 s (std 1.0)
    warm = decide.StartUp(360.0, (308.0, 309.0, 310.0), cold=False, budget=300.0, tolerance=None)
    # the slowest warm start-up, 10 s, plus max(5 s, 4 x 1.0 s) = 5 s: 15 s allowed
    assert decide.overhead_failure(trained(seconds=315.0), KIND_PROPOSAL, warm) is None
    late = decide.overhead_failure(trained(seconds=315.5), KIND_NOISE, warm)
    assert late is not None and late.reason == (
        "time: train.py's process ran 315.5 s, 15.5 s beyond its 300 s budget, more than the 15.0 s allowed: "
        "compared with the slowest warm start-up of the baseline's noise-floor runs, 10.0 s; the tolerance is 5.0 s "
        "(= 5 s, the largest of 5 s, 4 x start-up std 1.00 s). Training work outside the budget's clock (before its "
        "timer starts, or after it ends) does not count")
    # a trial that changes what is compiled: the cold 60 s plus max(5 s, 4 s, 0.5 x 60 s) = 30 s: 90 s allowed
    cold = decide.StartUp(360.0, (308.0, 309.0, 310.0), cold=True, budget=300.0, tolerance=None)
    assert decide.overhead_failure(trained(seconds=389.0), KIND_PROPOSAL, cold) is None
    recompiled = decide.overhead_failure(trained(seconds=390.5), KIND_PROPOSAL, cold)
    assert recompiled is not None and recompiled.reason == (
        "time: train.py's process ran 390.5 s, 90.5 s beyond its 300 s budget, more than the 90.0 s allowed: "
        "the trial changes what is compiled; compared with the baseline's cold start-up of 60.0 s (fresh compile "
        "cache); the tolerance is 30.0 s (= 0.5 x the cold start-up, the largest of 5 s, 4 x start-up std 1.00 s, "
        "0.5 x the cold start-up). Training work outside the budget's clock (before its timer starts, or after it "
        "ends) does not count")


def test_the_evaluators_verdicts() -> None:
    causality = judge(trained(), Evaluation(False, failure_kind="causality", reason="logits depend on the future"))
    assert (causality.status, causality.reason) == (REJECTED, "causality: logits depend on the future")
    assert causality.note == "The evaluator rejected it: causality: logits depend on the future"
    assert causality.extra == {"eval_failure_kind": "causality"}
    tamper = judge(trained(), Evaluation(False, failure_kind="tamper", reason="tamper: patched the loss"))
    assert tamper.reason == "tamper: patched the loss"  # not "tamper: tamper: ..."
    slow = judge(trained(), Evaluation(False, failure_kind="timeout", reason="no result in 600 s"))
    assert (slow.status, slow.reason, slow.extra) == (TIMEOUT, "evaluation timed out: no result in 600 s",
                                                      {"eval_failure_kind": "timeout"})
    broken = judge(trained(), Evaluation(False, failure_kind="load", reason=None))
    assert (broken.status, broken.reason) == (CRASH, "evaluation failed (load): the evaluator failed")
    assert broken.extra == {"eval_failure_kind": "load", "crash_log": "eval.log"}


def test_a_claimed_val_bpb_the_evaluator_did_not_measure_is_rejected() -> None:
    claim = judge(trained(summary={"val_bpb": "0.900000"}), SCORED)
    assert claim is not None and claim.status == REJECTED
    assert claim.reason == ("claim: train.py printed val_bpb 0.900000 but the harness's evaluator measured 1.000000; "
                            "the metric comes only from the evaluator")
    assert judge(trained(summary={"val_bpb": "1.004"}), SCORED) is None  # within 0.5 %
    assert decide.claimed_score_failure(float("nan"), 1.0) is None
    assert decide.claimed_score_failure(None, 1.0) is None


def test_a_run_that_trained_needs_the_evaluators_result() -> None:
    with pytest.raises(ValueError):
        judge(trained(), None)


# --- keep or discard ----------------------------------------------------------------------------

THRESHOLD = trust.keep_threshold(0.001, 2, sigmas=2.0, min_delta=0.0)  # 0.002
WORDS = "keep threshold 0.002000 = 2 x noise std 0.001000 (2 degrees of freedom)"
RULES = decide.KeepRules(confirm_runs=1, quarantine_factor=10.0, quarantine_floor=0.01)
BASELINE = Reference(1.0, "the baseline's mean over 3 seeds")


def screen(kind: str, val_bpb: float, *, rules: decide.KeepRules = RULES, largest: float | None = 0.02,
           reference: Reference | None = BASELINE, trial: int = 7, seed: int = 42) -> decide.Screening:
    return decide.screen_first_run(kind, trial, seed, val_bpb, reference=reference, threshold=THRESHOLD,
                                   largest_kept_gain=largest, rules=rules, base_seed=42)


def test_the_baseline_and_the_noise_floor_are_decided_at_once() -> None:
    first = screen(KIND_BASELINE, 0.9979, reference=None)
    assert (first.status, first.decision, first.reference, first.delta) == (KEEP, "baseline: 0.997900 (seed 42)",
                                                                            None, None)
    assert not first.needs_confirmation
    floor = screen(KIND_NOISE, 1.0012, seed=43)
    assert floor.status == DISCARD
    assert floor.decision == ("noise-floor run of the baseline (seed 43): 1.001200; measures run-to-run noise and is "
                              "never kept")
    assert floor.reference == 1.0 and floor.delta == pytest.approx(0.0012)
    with pytest.raises(ValueError):
        screen(KIND_PROPOSAL, 0.99, reference=None)


def test_a_first_run_short_of_the_threshold_is_discarded_without_confirmation() -> None:
    short = screen(KIND_PROPOSAL, 0.9985)
    assert short.status == DISCARD and short.confirmation_seeds == ()
    assert short.decision == (f"0.998500 does not beat the baseline's mean over 3 seeds 1.000000 by more than the "
                              f"{WORDS} (gain +0.001500)")
    assert short.delta == pytest.approx(-0.0015)


def test_a_candidate_is_confirmed_with_other_seeds() -> None:
    candidate = screen(KIND_PROPOSAL, 0.990)
    assert candidate.needs_confirmation and candidate.status is None and candidate.quarantined is None
    assert candidate.confirmation_seeds == (1049,)  # 42 + 1000 + trial 7
    two = screen(KIND_PROPOSAL, 0.990, rules=decide.KeepRules(2, 10.0, 0.01))
    assert two.confirmation_seeds == (1049, 2049)

    kept = decide.conclude(candidate, [(42, 0.990), (1049, 0.992)])
    assert kept.status == KEEP
    assert kept.val_bpb == pytest.approx(0.991) and kept.delta == pytest.approx(-0.009)
    assert kept.decision == (
        f"first run: 0.990000 beats the baseline's mean over 3 seeds 1.000000 by 0.010000 > {WORDS}; "
        f"confirmed: the mean 0.991000 of 2 seeds (seed 42: 0.990000, seed 1049: 0.992000) beats the reference "
        f"1.000000 by 0.009000, and every run by more than the {WORDS}")

    lucky = decide.conclude(candidate, [(42, 0.990), (1049, 1.001)])
    assert lucky.status == DISCARD and lucky.val_bpb == pytest.approx(0.9955)
    assert lucky.decision.endswith(f"not confirmed: seed 1049 scored 1.001000 (gain -0.001000), not more than the "
                                   f"{WORDS} (seed 42: 0.990000, seed 1049: 1.001000)")


def test_without_confirmation_runs_a_candidate_is_kept_on_its_first_run() -> None:
    kept = screen(KIND_PROPOSAL, 0.990, rules=decide.KeepRules(0, 10.0, 0.01))
    assert kept.status == KEEP and kept.confirmation_seeds == ()
    assert kept.decision == (f"0.990000 beats the baseline's mean over 3 seeds 1.000000 by 0.010000 > {WORDS}; "
                             "not re-run (--confirm-runs 0)")
    with pytest.raises(ValueError):
        decide.conclude(kept, [(42, 0.990)])


def test_a_gain_far_beyond_anything_kept_is_quarantined_until_another_seed_repeats_it() -> None:
    # the largest kept gain 0.001; a gain of 0.05 is more than 10 x that and more than the 0.01 floor
    suspect = screen(KIND_PROPOSAL, 0.950, rules=decide.KeepRules(0, 10.0, 0.01), largest=0.001)
    assert suspect.needs_confirmation and suspect.confirmation_seeds == (1049,)  # even with --confirm-runs 0
    assert suspect.quarantined == ("quarantined: a gain of 0.050000 is more than 10 x the largest gain kept so far "
                                   "(0.001000) and more than 0.01; it must repeat under another seed")
    # the mean 0.97 and each run clear the threshold, but the second run gained 0.01 < half of 0.05
    unrepeated = decide.conclude(suspect, [(42, 0.950), (1049, 0.990)])
    assert unrepeated.status == DISCARD
    assert unrepeated.decision == (
        f"{suspect.quarantined}; first run: 0.950000 beats the baseline's mean over 3 seeds 1.000000 by 0.050000 > "
        f"{WORDS}; not confirmed: the gain of 0.050000 did not repeat; seed 1049 gained 0.010000, less than half of "
        "it (seed 42: 0.950000, seed 1049: 0.990000)")
    repeated = decide.conclude(suspect, [(42, 0.950), (1049, 0.960)])
    assert repeated.status == KEEP and repeated.decision.startswith(suspect.quarantined + "; first run: ")
    # nothing kept yet: measured against the threshold (10 x 0.002 = 0.02 < 0.05)
    first_keep = screen(KIND_PROPOSAL, 0.950, largest=None)
    assert first_keep.quarantined == ("quarantined: a gain of 0.050000 is more than 10 x the keep threshold "
                                      "(0.002000; nothing kept yet) and more than 0.01; it must repeat under "
                                      "another seed")
    assert screen(KIND_PROPOSAL, 0.950, largest=0.02).quarantined is None  # 0.05 < 10 x 0.02


# --- what ends the run --------------------------------------------------------------------------


def finished(status: str, *, reason: str | None = None, seed: int = 42, **extra: object) -> TrialRecord:
    return TrialRecord(trial=1, status=status, description="x", parent="p", commit="c", started_at="",
                       ended_at="", seed=seed, failure_reason=reason, extra=dict(extra))


def test_a_baseline_that_did_not_score_and_a_noise_seed_that_failed_twice_stop_the_run() -> None:
    assert decide.stops_run(finished(CRASH, reason="exit code 1", baseline=True), 0) == (
        "the unmodified train.py (the baseline) did not score: crash: exit code 1; fix it or its environment, "
        "then resume")
    assert decide.stops_run(finished(KEEP, baseline=True), 0) is None
    assert decide.stops_run(finished(INTERRUPTED, baseline=True), 0) is None

    assert decide.stops_run(finished(CRASH, reason="disk full", seed=43, noise_floor=True), 0) is None  # runs again
    assert decide.stops_run(finished(CRASH, reason="disk full", seed=43, noise_floor=True), 1) == (
        "the noise-floor run with seed 43 failed 2 times (crash: disk full); the baseline's own code cannot be "
        "measured again here: fix the machine (disk, memory, device), then resume")
    assert decide.stops_run(finished(INTERRUPTED, seed=43, noise_floor=True), 1) is None
    assert decide.stops_run(finished(DISCARD, seed=43, noise_floor=True), 1) is None
    assert decide.stops_run(finished(CRASH, reason="boom"), 5) is None  # a proposal's crash is the agent's to repair


# --- screen_against: the screening with a history's numbers -----------------------------------------


def test_screen_against_takes_the_reference_threshold_and_seed_from_the_history_it_is_given() -> None:
    base = "b0" * 20

    def scored(trial: int, status: str, val_bpb: float, seed: int, commit: str = base, **extra: object) -> TrialRecord:
        return TrialRecord(trial=trial, status=status, description=f"trial {trial}", parent=base, commit=commit,
                           started_at="2026-01-01T00:00:00+00:00", ended_at="2026-01-01T00:05:00+00:00",
                           val_bpb=val_bpb, seed=seed, extra=dict(extra))

    settings = HistorySettings(seed=42, noise_runs=2, noise_sigmas=2.0, min_delta=0.0, max_repairs=2)
    empty = History.of([], settings, base)
    assert decide.screen_against(empty, KIND_BASELINE, 0, 42, 1.0, rules=RULES).status == KEEP
    # baseline 1.000 with seeds 43 and 44 at 1.002 and 0.998: mean 1.000, std 0.002, threshold 0.004
    floor = empty.add(scored(0, KEEP, 1.0, 42, baseline=True)).add(scored(1, DISCARD, 1.002, 43, noise_floor=True)) \
        .add(scored(2, DISCARD, 0.998, 44, noise_floor=True))
    candidate = decide.screen_against(floor, KIND_PROPOSAL, 3, 42, 0.990, rules=RULES)
    assert candidate.needs_confirmation and candidate.quarantined is None  # gain 0.010 is not above the 0.01 floor
    assert candidate.reference == pytest.approx(1.0) and candidate.threshold is not None
    assert candidate.threshold.value == pytest.approx(0.004)
    assert candidate.confirmation_seeds == (1045,)  # 42 + 1000 + trial 3
    assert decide.screen_against(floor, KIND_PROPOSAL, 3, 42, 0.997, rules=RULES).status == DISCARD  # gain 0.003
    # once trial 3 is kept at 0.990 and 0.992 (mean 0.991), 0.990 is no candidate; the stale history still says it is
    kept = floor.add(scored(3, KEEP, 0.991, 42, commit="c3" * 20, runs=[{"seed": 42, "val_bpb": 0.990},
                                                                        {"seed": 1045, "val_bpb": 0.992}]))
    now = decide.screen_against(kept, KIND_PROPOSAL, 4, 42, 0.990, rules=RULES)
    assert now.status == DISCARD and now.reference == pytest.approx(0.991)
    assert decide.screen_against(floor, KIND_PROPOSAL, 4, 42, 0.990, rules=RULES).needs_confirmation
