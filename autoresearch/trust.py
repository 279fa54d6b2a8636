"""Keep decisions above the noise: the noise floor, the keep threshold, confirmation and quarantine.

Pure functions over numbers and sources (no files, git or processes), so that each rule is tested on its own;
history.py gathers the numbers from the records and decide.py asks these. Lower val_bpb is better;
a *gain* is the reference's val_bpb minus the candidate's (positive is better).

The rules, as the records and the report state them:

- Seeds. The harness sets every trial's seed ($AUTORESEARCH_SEED). A trial trains with the run's
  seed; the noise-floor runs use `noise_seeds`, a candidate's confirmation runs `confirmation_seeds`.
- Noise floor. At the start of a run the unmodified baseline is trained again with `noise_runs`
  other seeds; the noise std is the sample std (ddof=1) of the baseline's scores. Candidates'
  confirmation runs are NOT pooled into it: a candidate is re-run because its first run was
  unusually low, so its spread is biased upwards (and a seed-dependent change has a spread of its
  own), which would inflate the threshold for the rest of the night.
- Keep threshold = max(--min-delta, --noise-sigmas x std); just --min-delta while no std is known.
- Reference. A candidate is compared with the mean of every score of the best commit: the
  baseline and its noise-floor runs, or a kept candidate's own runs.
- Screen. The candidate's first run must beat the reference by more than the threshold;
  otherwise it is discarded without spending a confirmation run.
- Confirmation. It is then trained again with `confirm_runs` other seeds, and kept only if the
  mean of all its runs AND every single run beat the reference by more than the threshold.
- Quarantine. A gain far beyond anything seen so far (more than `quarantine_factor` times the
  largest gain kept so far, or the threshold before anything was kept, and more than
  `quarantine_floor`) needs at least one confirmation run even with --confirm-runs 0, and every
  confirmation run must repeat at least half of the first run's gain.
- Start-up. The harness's clock around train.py minus the budget is start-up; beyond the
  reference plus a tolerance it is training outside the clock (`startup_rule`). The reference is
  the baseline's cold start-up (a fresh run-private compile cache) for a trial that changes what is
  compiled (`compiles_cold`), else the slowest warm start-up of the noise-floor runs; the
  tolerance is max(5 s, 4 x the warm start-ups' std, 0.5 x the cold start-up for a cold trial).
  The kill limit follows the cold start-up too (`startup_allowance`).

What this does not protect against: a small sample. With the default four extra seeds the std
has four degrees of freedom and is well below the true std in some runs. Simulated nights of 30
pure-noise proposals (tests/test_trust.py) still keep something in about 2 nights in 10 with the
defaults (3 in 10 with two extra seeds), against nearly every night with keep-any-improvement;
--noise-runs 8 makes it about 1 in 10, at little cost in power (a real 4-sigma gain is kept about
9 times in 10 in each case). Confirmation defends against luck, not against a change that cheats
the same way under every seed (integrity.py, launch.py and the evaluator are for that), nor
against a slow drift of the machine (a throttling GPU) that shifts every score of the night. The
start-up constants are choices, not measured GPU noise; a code change earns the cold reference, so
a trial can spend up to the cold-minus-warm difference training before its timer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

KEEP, DISCARD = "keep", "discard"  # the same words as ledger.KEEP and ledger.DISCARD


# --- Seeds --------------------------------------------------------------------------------------


def noise_seeds(base_seed: int, count: int) -> list[int]:
    """The seeds of the noise-floor runs: the run's seed plus 1, 2, ... count."""
    return [base_seed + index for index in range(1, count + 1)]


def confirmation_seeds(base_seed: int, trial: int, count: int) -> list[int]:
    """The seeds of a candidate's confirmation runs: new for every trial, never a noise seed."""
    return [base_seed + 1000 * index + trial for index in range(1, count + 1)]


# --- Spread -------------------------------------------------------------------------------------


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def sample_std(values: Sequence[float]) -> float | None:
    """The sample standard deviation (ddof=1), or None with fewer than two values."""
    if len(values) < 2:
        return None
    centre = mean(values)
    return math.sqrt(math.fsum((value - centre) ** 2 for value in values) / (len(values) - 1))


# --- The threshold ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    value: float  # a candidate must beat the reference by more than this
    std: float | None  # the noise std it came from (None: not measured)
    dof: int  # degrees of freedom of that std
    sigmas: float
    min_delta: float

    @property
    def words(self) -> str:
        """How the threshold was set, for the records: 'keep threshold 0.0024 = 2 x noise std ...'."""
        noise = self.sigmas * self.std if self.std is not None else None
        if noise is not None and noise >= self.min_delta:
            return (f"keep threshold {self.value:.6f} = {self.sigmas:g} x noise std {self.std:.6f} "
                    f"({self.dof} degree{'s' if self.dof != 1 else ''} of freedom)")
        if noise is not None:
            return (f"keep threshold {self.value:.6f} = --min-delta (above {self.sigmas:g} x noise std "
                    f"{self.std:.6f})")
        if self.min_delta:
            return f"keep threshold {self.value:.6f} = --min-delta (noise not measured)"
        return "keep threshold 0 (noise not measured, no --min-delta): any improvement counts"


def keep_threshold(std: float | None, dof: int = 0, *, sigmas: float, min_delta: float) -> Threshold:
    """max(min_delta, sigmas x std); min_delta alone when the std is unknown."""
    noise = sigmas * std if std is not None else 0.0
    return Threshold(max(min_delta, noise), std, dof, sigmas, min_delta)


def noise_floor_record(seeds: Sequence[int], val_bpbs: Sequence[float], threshold: Threshold) -> dict:
    """run.json's `noise_floor`: the baseline's seeds and scores, their std and the keep threshold."""
    method = f"sample std (ddof=1) of val_bpb over {len(val_bpbs)} seeds of the unmodified baseline"
    return {"seeds": list(seeds), "val_bpbs": list(val_bpbs), "mean": mean(val_bpbs) if val_bpbs else None,
            "std": threshold.std, "dof": threshold.dof, "keep_threshold": threshold.value,
            "sigmas": threshold.sigmas, "min_delta": threshold.min_delta,
            "method": f"{method}; {threshold.words}; a candidate is kept only when its first run, every "
                      "confirmation run and their mean all beat the best commit's mean by more than the threshold"}


# --- Decisions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Screen:
    candidate: bool  # worth confirming (or keeping, without confirmation)
    gain: float
    reason: str


def screen(val_bpb: float, reference: float, threshold: Threshold, reference_words: str) -> Screen:
    """Does the first run beat the reference by more than the threshold?"""
    gain = reference - val_bpb
    if gain > threshold.value:
        return Screen(True, gain, f"{val_bpb:.6f} beats {reference_words} {reference:.6f} by {gain:.6f} "
                                  f"> {threshold.words}")
    return Screen(False, gain, f"{val_bpb:.6f} does not beat {reference_words} {reference:.6f} by more than the "
                               f"{threshold.words} (gain {gain:+.6f})")


def quarantine(gain: float, largest_kept_gain: float | None, threshold: Threshold, *, factor: float,
               floor: float) -> str | None:
    """Why a gain is far beyond anything seen so far (quarantined until repeated), or None."""
    if factor <= 0:
        return None
    if largest_kept_gain is not None and largest_kept_gain > 0:
        reference, seen = largest_kept_gain, f"the largest gain kept so far ({largest_kept_gain:.6f})"
    else:
        reference, seen = threshold.value, f"the keep threshold ({threshold.value:.6f}; nothing kept yet)"
    if gain > floor and gain > factor * reference:
        return (f"quarantined: a gain of {gain:.6f} is more than {factor:g} x {seen} and more than "
                f"{floor:g}; it must repeat under another seed")
    return None


def confirm(runs: Sequence[tuple[int, float]], reference: float, threshold: Threshold, *,
            quarantined: bool = False) -> tuple[str, str]:
    """(keep or discard, why) for a candidate scored under several seeds: runs = [(seed, val_bpb), ...].

    Kept only if the mean and every single run beat the reference by more than the threshold;
    when quarantined, every run after the first must also repeat half the first run's gain.
    """
    if len(runs) < 2:
        raise ValueError("confirm needs the first run and at least one confirmation run")
    scores = [score for _, score in runs]
    average = mean(scores)
    listed = ", ".join(f"seed {seed}: {score:.6f}" for seed, score in runs)
    gain = reference - average
    if not gain > threshold.value:
        return DISCARD, (f"not confirmed: the mean {average:.6f} of {len(runs)} seeds ({listed}) beats the "
                         f"reference {reference:.6f} by {gain:+.6f}, not more than the {threshold.words}")
    short = [(seed, score) for seed, score in runs if not reference - score > threshold.value]
    if short:
        seed, score = short[0]
        return DISCARD, (f"not confirmed: seed {seed} scored {score:.6f} (gain {reference - score:+.6f}), not more "
                         f"than the {threshold.words} ({listed})")
    if quarantined:
        first_gain = reference - scores[0]
        weak = [(seed, score) for seed, score in runs[1:] if reference - score < first_gain / 2]
        if weak:
            seed, score = weak[0]
            return DISCARD, (f"not confirmed: the gain of {first_gain:.6f} did not repeat; seed {seed} gained "
                             f"{reference - score:.6f}, less than half of it ({listed})")
    return KEEP, (f"confirmed: the mean {average:.6f} of {len(runs)} seeds ({listed}) beats the reference "
                  f"{reference:.6f} by {gain:.6f}, and every run by more than the {threshold.words}")


# --- Start-up: work outside train.py's own clock ------------------------------------------------
#
# The harness's clock around train.py's process minus the budget is its start-up (imports, data,
# compilation) plus shut-down: time the trial spends outside its own timer. A trial that trains
# before its timer starts shows up here. The yardstick is measured the way a changed trial starts:
# the baseline's first run uses a fresh, run-private compile cache (runs/<tag>/compile-cache), so
# its start-up is a COLD compile; the noise-floor runs of the same commit start WARM. A trial that
# changes the compiled graph (a shape knob, or any code outside the knobs) compiles cold and is
# compared with the cold figure; one that changes only other knobs is compared with the warm one.

SHAPE_KNOBS = frozenset({"DEPTH", "ASPECT_RATIO", "HEAD_DIM", "WINDOW_PATTERN", "TOTAL_BATCH_SIZE",
                         "DEVICE_BATCH_SIZE", "EVAL_BATCH_SIZE", "COMPILE", "MAX_SEQ_LEN"})
MIN_OVERHEAD_TOLERANCE = 5.0  # seconds: process start and clock jitter below this are not measured noise
STARTUP_NOISE_SIGMAS = 4.0  # tolerance >= this many start-up std (of the warm runs) above the reference
COLD_SLACK = 0.5  # a changed shape may compile this fraction longer than the baseline's cold start
BASELINE_STARTUP_ALLOWANCE = 600.0  # the baseline's kill limit past the budget: its cold compile is not known yet
MIN_STARTUP_ALLOWANCE = 60.0
STARTUP_ALLOWANCE_FACTOR = 3.0  # later trials are killed past the budget plus this many cold start-ups


def compiles_cold(baseline_source: str, trial_source: str) -> bool:
    """Whether a trial's train.py changes what gets compiled: a shape knob, or code outside the knobs."""
    from autoresearch.knobs import read_knobs, set_knobs

    base, trial = read_knobs(baseline_source), read_knobs(trial_source)
    changed = {name for name in set(base) | set(trial)
               if name not in base or name not in trial or base[name].value != trial[name].value}
    if changed & SHAPE_KNOBS or any(name not in base or name not in trial for name in changed):
        return True
    restored = set_knobs(trial_source, {name: base[name].value for name in changed}) if changed else trial_source
    return restored != baseline_source


@dataclass(frozen=True)
class StartupRule:
    reference: float  # seconds of start-up the trial is compared with
    tolerance: float  # seconds it may take beyond the reference
    cold: bool  # compared with the cold figure
    words: str  # how the limit was set, for the record

    @property
    def allowed(self) -> float:
        return self.reference + self.tolerance


def startup_rule(*, cold_startup: float, warm_startups: Sequence[float], cold: bool,
                 tolerance: float | None) -> StartupRule:
    """How much start-up a trial may take: the cold or warm reference plus a tolerance.

    Reference: the baseline's cold start-up when the trial compiles cold or no warm run was
    measured, else the slowest warm start-up of the noise-floor runs. Tolerance (unless given as
    --overhead-tolerance): max(MIN_OVERHEAD_TOLERANCE, STARTUP_NOISE_SIGMAS x the sample std of the
    warm start-ups, and for a cold trial COLD_SLACK x the cold start-up).
    """
    use_cold = cold or not warm_startups
    reference = cold_startup if use_cold else max(warm_startups)
    what = (f"the baseline's cold start-up of {cold_startup:.1f} s (fresh compile cache)" if use_cold
            else f"the slowest warm start-up of the baseline's noise-floor runs, {reference:.1f} s")
    why = "the trial changes what is compiled; " if cold else ""
    if tolerance is not None:
        return StartupRule(reference, tolerance, use_cold,
                           f"{why}compared with {what}; the tolerance is {tolerance:g} s (--overhead-tolerance)")
    spread = sample_std(warm_startups)
    parts = {f"{MIN_OVERHEAD_TOLERANCE:g} s": MIN_OVERHEAD_TOLERANCE}
    if spread is not None:
        parts[f"{STARTUP_NOISE_SIGMAS:g} x start-up std {spread:.2f} s"] = STARTUP_NOISE_SIGMAS * spread
    if cold:
        parts[f"{COLD_SLACK:g} x the cold start-up"] = COLD_SLACK * cold_startup
    chosen = max(parts, key=lambda name: parts[name])
    value = parts[chosen]
    return StartupRule(reference, value, use_cold,
                       f"{why}compared with {what}; the tolerance is {value:.1f} s (= {chosen}, the largest of "
                       f"{', '.join(parts)})")


def startup_allowance(configured: float | None, cold_startup: float | None) -> float:
    """Seconds past the budget before training is killed: --startup-allowance, else from the cold start-up."""
    if configured is not None:
        return configured
    if cold_startup is None:
        return BASELINE_STARTUP_ALLOWANCE
    return max(MIN_STARTUP_ALLOWANCE, STARTUP_ALLOWANCE_FACTOR * cold_startup)
