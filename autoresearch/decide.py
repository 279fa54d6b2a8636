"""Steps 7 and 8 of a trial as pure rules: judge a scored run, then keep or discard it, in words.

`judge` says why a run of a trial does not count (a `Failure`: its status, the reason for the
record, a note for the agent) or None, from values the loop measured: the training result, the
evaluator's verdict, the guarded files that changed (integrity.py) and the other tracked files
of the worktree that changed, and what start-up is measured against (`StartUp`: the baseline's
cold and warm start-ups). The checks come in the order they matter: the integrity of the
measurement first, then how training ended, its start-up beyond the reference
(`overhead_failure`, trust.startup_rule), the evaluator's verdict, and a val_bpb train.py claimed.

The keep decision (the rules are trust.py's) comes in two pure steps around the only side
effect, the confirmation runs: `screen_first_run` decides the baseline, a noise-floor run and a
first run that does not clear the threshold at once, and otherwise says which seeds must confirm
it (quarantine included); `screen_against` asks it with a history's reference, threshold and
largest kept gain (a scheduler may pass the history a candidate's parent had: a stale one);
`conclude` decides from all its runs. `stops_run` says when a recorded
trial ends the run (the baseline did not score; a noise-floor seed failed again).

What this does not protect against: wrong inputs. These rules trust the numbers they are given:
the harness's clock (runner.py), the guard's snapshot (integrity.py) and the evaluator's score
(evaluate.py) are what make those numbers honest, within the limits their docstrings state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from autoresearch import runner, trust
from autoresearch.history import KIND_BASELINE, KIND_NOISE, History, Reference
from autoresearch.integrity import describe
from autoresearch.ledger import CRASH, DISCARD, INTERRUPTED, KEEP, REJECTED, TIMEOUT, TrialRecord

CLAIM_TOLERANCE = 0.005  # a claimed val_bpb further than this (relative) from the evaluator's is false
MAX_NOISE_ATTEMPTS = 2  # failures of one noise-floor seed before the run stops


# --- Step 7: judge ------------------------------------------------------------------------------


@dataclass
class Failure:
    """Why a run of a trial does not count: its status, the reason for the record, a note for the agent."""

    status: str
    reason: str
    note: str | None = None  # told to the agent in its next context (rejections)
    extra: dict = field(default_factory=dict)


def claimed_score_failure(claimed: float | None, measured: float) -> Failure | None:
    """A finite val_bpb printed by train.py that the evaluator did not measure is a false claim.

    Under the harness train.py cannot measure val_bpb ($AUTORESEARCH_TRAIN_ONLY=1: it prints nan),
    so a number that disagrees with the evaluator's was made up.
    """
    if claimed is None or claimed != claimed or claimed in (float("inf"), float("-inf")):
        return None
    if abs(claimed - measured) <= CLAIM_TOLERANCE * max(abs(measured), 1e-9):
        return None
    reason = (f"claim: train.py printed val_bpb {claimed:.6f} but the harness's evaluator measured "
              f"{measured:.6f}; the metric comes only from the evaluator")
    return Failure(REJECTED, reason, "train.py must not print a val_bpb of its own under the harness.")


@dataclass(frozen=True)
class StartUp:
    """What a trial's start-up (its process's wall clock beyond the budget) is measured against (trust.py's rule)."""

    baseline_training_seconds: float | None  # the baseline's first run, a cold compile (None before it trained)
    warm_training_seconds: Sequence[float]  # the baseline's noise-floor runs (warm compile cache)
    cold: bool  # the trial changes what is compiled (trust.compiles_cold): compared with the cold figure
    budget: float  # --budget, seconds
    tolerance: float | None  # --overhead-tolerance, seconds; None: from the warm runs' measured noise


def overhead_failure(training: runner.TrainingResult, kind: str, startup: StartUp) -> Failure | None:
    """Training work outside train.py's own clock: more start-up than the reference allows (trust.startup_rule).

    The harness's wall clock around the process minus the budget is the start-up (and
    shut-down) a trial spends outside its timer. The baseline's first run (a fresh compile
    cache) is the cold yardstick, its noise-floor runs the warm one; a trial that changes what
    is compiled is compared with the cold one.
    """
    baseline_seconds, budget = startup.baseline_training_seconds, startup.budget
    if kind == KIND_BASELINE or training.status != runner.OK or baseline_seconds is None:
        return None
    rule = trust.startup_rule(cold_startup=max(0.0, baseline_seconds - budget),
                              warm_startups=[max(0.0, seconds - budget) for seconds in startup.warm_training_seconds],
                              cold=startup.cold, tolerance=startup.tolerance)
    outside = training.seconds - budget
    if outside <= rule.allowed:
        return None
    reason = (f"time: train.py's process ran {training.seconds:.1f} s, {outside:.1f} s beyond its {budget:g} s "
              f"budget, more than the {rule.allowed:.1f} s allowed: {rule.words}. Training work outside the "
              "budget's clock (before its timer starts, or after it ends) does not count")
    return Failure(REJECTED, reason, "Do all training inside TIME_BUDGET, measured from the start of the run.")


def judge(training: runner.TrainingResult, evaluation: object | None, changes: Sequence, changed_tracked: Sequence[str],
          kind: str, startup: StartUp) -> Failure | None:
    """Why this run does not count, in the order the checks matter; None when it scored.

    `changes` are the guard's changes (integrity.Change: name, restorable); `changed_tracked`
    the other tracked files of the worktree that differ from the trial's commit; `evaluation`
    the evaluator's result (ok, failure_kind, reason, bpb), None when it did not run.
    """
    if changes or changed_tracked:
        names = [change.name for change in changes] + list(changed_tracked)
        failure = Failure(REJECTED, "integrity: train.py modified " + ", ".join(names),
                          "Worktree files were restored; train.py must not change other files.")
        unrestorable = [change for change in changes if not change.restorable]
        if unrestorable:
            failure.extra["stops_run"] = (f"{describe(unrestorable)}: the harness or the dataset can no longer "
                                          "be trusted; reinstall autoresearch or re-run `autoresearch prepare`, "
                                          "then resume")
        return failure
    if training.status == runner.INTEGRITY:
        return Failure(REJECTED, training.reason or "integrity", "train.py may read only the train split.")
    if training.status == runner.TIMEOUT:
        return Failure(TIMEOUT, training.reason or "timeout")
    if training.status == runner.CRASH:
        return Failure(CRASH, training.reason or "crash", extra={"crash_log": "train.log"})
    overhead = overhead_failure(training, kind, startup)
    if overhead is not None:
        return overhead
    if evaluation is None:
        raise ValueError("judge: a run that trained without failing needs the evaluator's result")
    if not getattr(evaluation, "ok", False):
        failure_kind = getattr(evaluation, "failure_kind", None)
        why = getattr(evaluation, "reason", None) or "the evaluator failed"
        extra = {"eval_failure_kind": failure_kind}
        if failure_kind in ("causality", "tamper"):
            reason = why if why.startswith(f"{failure_kind}:") else f"{failure_kind}: {why}"
            return Failure(REJECTED, reason, f"The evaluator rejected it: {reason}", extra)
        if failure_kind == "timeout":
            return Failure(TIMEOUT, f"evaluation timed out: {why}", extra=extra)
        return Failure(CRASH, f"evaluation failed ({failure_kind}): {why}", extra={**extra, "crash_log": "eval.log"})
    return claimed_score_failure(runner.float_or_none(training.summary.get("val_bpb")),
                                 float(evaluation.bpb))  # type: ignore[attr-defined]


# --- Step 8: keep or discard --------------------------------------------------------------------


@dataclass(frozen=True)
class KeepRules:
    """The run's confirmation and quarantine settings (--confirm-runs, --quarantine-factor, --quarantine-floor)."""

    confirm_runs: int
    quarantine_factor: float
    quarantine_floor: float


@dataclass(frozen=True)
class Screening:
    """A first run, screened: decided already (`status`), or waiting for the runs of `confirmation_seeds`."""

    status: str | None  # keep or discard when decided without confirmation; None: confirm first
    decision: str | None  # the decision in words, when decided
    reference: float | None  # what it was compared with (None for the baseline)
    delta: float | None  # val_bpb minus the reference
    threshold: trust.Threshold | None = None
    first: trust.Screen | None = None  # the first run's screen, for a candidate
    quarantined: str | None = None  # why the gain is quarantined, in words
    confirmation_seeds: tuple[int, ...] = ()

    @property
    def needs_confirmation(self) -> bool:
        return self.status is None


def screen_first_run(kind: str, trial: int, seed: int, val_bpb: float, *, reference: Reference | None,
                     threshold: trust.Threshold, largest_kept_gain: float | None, rules: KeepRules,
                     base_seed: int) -> Screening:
    """Decide the baseline, a noise-floor run, or a proposal's first run; or say which seeds must confirm it.

    A candidate (its first run beats the reference by more than the threshold) is re-run with
    --confirm-runs other seeds; a quarantined one (trust.quarantine) with at least one, even
    with --confirm-runs 0; with no confirmation due it is kept on its first run.
    """
    if kind == KIND_BASELINE:
        return Screening(KEEP, f"baseline: {val_bpb:.6f} (seed {seed})", None, None)
    if reference is None or reference.val_bpb is None:
        raise ValueError("screen_first_run: only the baseline is decided without a reference")
    delta = val_bpb - reference.val_bpb
    if kind == KIND_NOISE:
        return Screening(DISCARD, f"noise-floor run of the baseline (seed {seed}): {val_bpb:.6f}; measures "
                                  "run-to-run noise and is never kept", reference.val_bpb, delta)
    first = trust.screen(val_bpb, reference.val_bpb, threshold, reference.words)
    if not first.candidate:
        return Screening(DISCARD, first.reason, reference.val_bpb, delta, threshold, first)
    quarantined = trust.quarantine(first.gain, largest_kept_gain, threshold,
                                   factor=rules.quarantine_factor, floor=rules.quarantine_floor)
    count = max(rules.confirm_runs, 1 if quarantined else 0)
    if count == 0:
        return Screening(KEEP, first.reason + "; not re-run (--confirm-runs 0)", reference.val_bpb, delta,
                         threshold, first)
    return Screening(None, None, reference.val_bpb, delta, threshold, first, quarantined,
                     tuple(trust.confirmation_seeds(base_seed, trial, count)))


def screen_against(history: History, kind: str, trial: int, seed: int, val_bpb: float, *,
                   rules: KeepRules) -> Screening:
    """`screen_first_run` with what `history` says: its reference (none for the baseline), threshold,
    largest kept gain and the run's seed. The history is the one the run is compared against."""
    return screen_first_run(kind, trial, seed, val_bpb,
                            reference=history.reference() if kind != KIND_BASELINE else None,
                            threshold=history.threshold(), largest_kept_gain=history.largest_kept_gain(),
                            rules=rules, base_seed=history.settings.seed)


@dataclass(frozen=True)
class Conclusion:
    """A confirmed candidate's decision: keep or discard, in words, with the mean of all its runs."""

    status: str
    decision: str
    val_bpb: float  # the mean of every run
    delta: float  # that mean minus the reference


def conclude(screening: Screening, runs: Sequence[tuple[int, float]]) -> Conclusion:
    """Keep or discard from every run [(seed, val_bpb), ...], the first run first (trust.confirm)."""
    if not screening.needs_confirmation or screening.reference is None or screening.threshold is None \
            or screening.first is None:
        raise ValueError("conclude: this screening needs no confirmation runs")
    status, why = trust.confirm(runs, screening.reference, screening.threshold,
                                quarantined=bool(screening.quarantined))
    average = trust.mean([score for _, score in runs])
    decision = "; ".join(part for part in (screening.quarantined, "first run: " + screening.first.reason, why) if part)
    return Conclusion(status, decision, average, average - screening.reference)


def stops_run(record: TrialRecord, noise_failures_before: int) -> str | None:
    """Why the recorded trial ends the run, or None: the baseline did not score, or a noise-floor seed failed again.

    A failed noise-floor run is the machine's doing (the baseline's own code scored before: a
    full disk, a busy GPU): its seed runs again; deciding without the noise floor asked for keeps
    noise. `noise_failures_before` counts that seed's earlier failures (history.noise_failures).
    """
    if record.extra.get("baseline") and record.status not in (KEEP, INTERRUPTED):
        return (f"the unmodified train.py (the baseline) did not score: {record.status}: "
                f"{record.failure_reason}; fix it or its environment, then resume")
    if record.extra.get("noise_floor") and record.status not in (DISCARD, INTERRUPTED) \
            and noise_failures_before + 1 >= MAX_NOISE_ATTEMPTS:
        return (f"the noise-floor run with seed {record.seed} failed {MAX_NOISE_ATTEMPTS} "
                f"times ({record.status}: {record.failure_reason}); the baseline's own "
                "code cannot be measured again here: fix the machine (disk, memory, "
                "device), then resume")
    return None
