"""The keep rules over many simulated nights: false keeps and the true gain reached, with no processes.

    python bench/bench_statistics.py [--nights 400] [--proposals 100] [--seed 0] [--variants]
                                     [--noise-runs 4 --noise-sigmas 2 --confirm-runs 1 ...] [--json PATH]

A synthetic objective stands in for training: each proposal has a TRUE gain (the drop in val_bpb it
causes, added to its parent's true val_bpb) drawn from a known mixture (by default half of them
near zero, a third harmful, a few helpful), and every training run scores its commit's true val_bpb
plus Gaussian run-to-run noise. A night is replayed through the run's real rules: the records are
built the way loop.py's `Night` builds them (the baseline, the noise-floor runs of the baseline
commit, then proposals on the best commit, confirmation runs when `decide` asks for them, with
`extra["runs"]` on a confirmed record) and added to a `History`; every decision is
`decide.screen_against` then `decide.conclude`, exactly the calls of `Night._decide`. Because the
truth is known, each keep is judged: a FALSE keep is a kept proposal whose true gain is <= 0.

Printed per setting, as the mean over nights with its standard error: false keeps per night,
true keeps per night, the true gain reached (the baseline's true val_bpb minus the final best's),
the share of the available gain reached (the sum of the positive true gains drawn that night: the
gain an oracle keeping exactly the helpful proposals would reach, since gains add up here), the
training runs spent, and the share of nights with at least one false keep.

Executors: `serial` (one lane, today's loop: every proposal is screened against the current best).
The shape is there for a concurrent executor (`--workers 4`: candidates screened against the stale
parent they were proposed from, then rebased onto the new best and measured again): it is another
`Executor` with the same `night()` signature, and the measurement below does not change. Only
`--workers 1` is simulated today; any other count is said to be not simulated, never given numbers.

What this does not model: crashes, timeouts and rejected proposals (they spend runs but never keep),
effects that depend on the parent (here gains simply add up), noise that is not Gaussian or that
drifts during a night, and an agent whose proposals depend on what was kept. The mixture is a
choice, not a measurement of any real agent.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from autoresearch import decide  # noqa: E402
from autoresearch.history import KIND_BASELINE, KIND_NOISE, KIND_PROPOSAL, History, HistorySettings  # noqa: E402
from autoresearch.ledger import INTERRUPTED, KEEP, TrialRecord  # noqa: E402

BASELINE_COMMIT = "base"
RUN_SEED = 42


# --- The synthetic objective ---------------------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    """True gains from a three-part mixture (in units of the noise std), scores with Gaussian noise."""

    baseline_bpb: float = 1.0
    noise_std: float = 0.001  # run-to-run std of val_bpb (bpb)
    null_share: float = 0.50  # gains near zero: N(0, null_spread x noise_std)
    null_spread: float = 0.25
    harmful_share: float = 0.35  # gains below zero: -Exp(mean harmful_mean x noise_std)
    harmful_mean: float = 3.0
    helpful_mean: float = 3.0  # the rest help: +Exp(mean helpful_mean x noise_std)

    def check(self) -> None:
        if self.noise_std < 0 or self.null_spread < 0 or self.harmful_mean <= 0 or self.helpful_mean <= 0:
            raise ValueError("the noise std and spreads must be >= 0, the means > 0")
        if not (self.null_share >= 0 and self.harmful_share >= 0 and self.null_share + self.harmful_share <= 1):
            raise ValueError("--null-share and --harmful-share must be >= 0 and add up to at most 1")

    @property
    def helpful_share(self) -> float:
        return 1.0 - self.null_share - self.harmful_share

    def draw_gain(self, rng: random.Random) -> float:
        pick = rng.random()
        if pick < self.null_share:
            return rng.gauss(0.0, self.null_spread * self.noise_std)
        if pick < self.null_share + self.harmful_share:
            return -rng.expovariate(1.0 / (self.harmful_mean * self.noise_std))
        return rng.expovariate(1.0 / (self.helpful_mean * self.noise_std))

    def score(self, true_bpb: float, rng: random.Random) -> float:
        return rng.gauss(true_bpb, self.noise_std)


# --- The rules of a run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """The run's trust settings (runconfig.RunConfig's names and defaults)."""

    name: str
    noise_runs: int = 4
    noise_sigmas: float = 2.0
    confirm_runs: int = 1
    quarantine_factor: float = 10.0
    quarantine_floor: float = 0.01
    min_delta: float = 0.0

    def settings(self) -> HistorySettings:
        return HistorySettings(seed=RUN_SEED, noise_runs=self.noise_runs, noise_sigmas=self.noise_sigmas,
                               min_delta=self.min_delta, max_repairs=2)

    def keep_rules(self) -> decide.KeepRules:
        return decide.KeepRules(self.confirm_runs, self.quarantine_factor, self.quarantine_floor)


# --- One night -------------------------------------------------------------------------------------


@dataclass
class NightResult:
    proposals: int
    runs: int  # training runs spent: baseline, noise floor, first runs and confirmation runs
    false_keeps: int  # kept proposals whose true gain is <= 0
    true_keeps: int
    true_gain: float  # the baseline's true val_bpb minus the final best's
    available_gain: float  # the sum of the positive true gains drawn (an oracle's gain)
    records: tuple[TrialRecord, ...] = field(repr=False, default=())


class Executor(Protocol):
    """Plays one night of `proposals` proposals under `rules` and says what was kept, truth known."""

    name: str

    def night(self, objective: Objective, rules: Rules, proposals: int, rng: random.Random) -> NightResult:
        ...


def decide_record(history: History, record: TrialRecord, kind: str, first_score: float,
                  measure: Callable[[int], float], rules: decide.KeepRules) -> None:
    """Fill in the decision as loop.Night._decide does: screen, run the confirmation seeds asked for, conclude.

    `measure(seed)` is one more training run of the record's commit; `history` is what it is compared with.
    """
    record.val_bpb = first_score
    screening = decide.screen_against(history, kind, record.trial, record.seed, first_score,  # type: ignore[arg-type]
                                      rules=rules)
    if screening.reference is not None:
        record.delta = screening.delta
        record.extra["reference_bpb"] = screening.reference
    if not screening.needs_confirmation:
        record.status, record.decision = screening.status, screening.decision  # type: ignore[assignment]
        return
    if screening.quarantined:
        record.extra["quarantined"] = screening.quarantined
    runs = [(record.seed, first_score)]
    record.extra["runs"] = [{"seed": record.seed, "val_bpb": first_score}]
    for seed in screening.confirmation_seeds:
        score = measure(seed)
        runs.append((seed, score))
        record.extra["runs"].append({"seed": seed, "val_bpb": score})
    conclusion = decide.conclude(screening, runs)  # type: ignore[arg-type]
    record.val_bpb, record.delta = conclusion.val_bpb, conclusion.delta
    record.status, record.decision = conclusion.status, conclusion.decision


class SerialExecutor:
    """Today's lane: one trial at a time, each proposal built on and compared with the current best."""

    name = "serial"

    def night(self, objective: Objective, rules: Rules, proposals: int, rng: random.Random) -> NightResult:
        keep_rules = rules.keep_rules()
        history = History.of([], rules.settings(), BASELINE_COMMIT)
        true_bpb = {BASELINE_COMMIT: objective.baseline_bpb}
        gain_of: dict[str, float] = {}
        runs = done = 0
        while done < proposals:
            spec = history.next_spec()
            if spec.kind == KIND_PROPOSAL:
                commit = f"trial-{spec.trial:04d}"
                gain_of[commit] = objective.draw_gain(rng)
                true_bpb[commit] = true_bpb[spec.parent] - gain_of[commit]
                done += 1
            else:
                commit = BASELINE_COMMIT
            extra = {KIND_BASELINE: {"baseline": True}, KIND_NOISE: {"noise_floor": True}}.get(spec.kind, {})
            record = TrialRecord(trial=spec.trial, status=INTERRUPTED, description=f"{spec.kind} {spec.trial}",
                                 parent=spec.parent, commit=commit, started_at="", ended_at="", seed=spec.seed,
                                 extra=dict(extra))

            def measure(seed: int, commit: str = commit) -> float:
                nonlocal runs
                runs += 1
                return objective.score(true_bpb[commit], rng)

            decide_record(history, record, spec.kind, measure(spec.seed), measure, keep_rules)
            history = history.add(record)
        kept = [record.commit for record in history.records if record.status == KEEP and record.commit in gain_of]
        return NightResult(
            proposals=done, runs=runs, false_keeps=sum(1 for commit in kept if gain_of[commit] <= 0),
            true_keeps=sum(1 for commit in kept if gain_of[commit] > 0),
            true_gain=objective.baseline_bpb - true_bpb[history.best.commit],
            available_gain=math.fsum(gain for gain in gain_of.values() if gain > 0), records=history.records)


EXECUTORS: dict[str, type] = {"serial": SerialExecutor}
SUPPORTED_WORKERS = {"serial": (1,)}


# --- The measurement -------------------------------------------------------------------------------


def mean_and_error(values: Sequence[float]) -> tuple[float, float]:
    """The mean and its standard error (sample std / sqrt(n); 0 for a single value)."""
    n = len(values)
    centre = math.fsum(values) / n
    if n < 2:
        return centre, 0.0
    return centre, math.sqrt(math.fsum((value - centre) ** 2 for value in values) / (n - 1) / n)


@dataclass
class Summary:
    rules: str
    executor: str
    workers: int
    nights: int
    proposals: int
    false_keeps_per_night: tuple[float, float]  # (mean, standard error)
    true_keeps_per_night: tuple[float, float]
    true_gain_bpb: tuple[float, float]
    gain_share: tuple[float, float]  # of the available (oracle) gain
    runs_per_night: tuple[float, float]
    nights_with_a_false_keep: float


def measure(executor: Executor, workers: int, objective: Objective, rules: Rules, nights: int, proposals: int,
            seed: int) -> Summary:
    rng = random.Random(seed)  # every setting starts from the same seed (the draws part once decisions differ)
    results = [executor.night(objective, rules, proposals, rng) for _ in range(nights)]
    shares = [r.true_gain / r.available_gain for r in results if r.available_gain > 0]
    return Summary(
        rules=rules.name, executor=executor.name, workers=workers, nights=nights, proposals=proposals,
        false_keeps_per_night=mean_and_error([r.false_keeps for r in results]),
        true_keeps_per_night=mean_and_error([r.true_keeps for r in results]),
        true_gain_bpb=mean_and_error([r.true_gain for r in results]),
        gain_share=mean_and_error(shares) if shares else (float("nan"), 0.0),
        runs_per_night=mean_and_error([r.runs for r in results]),
        nights_with_a_false_keep=sum(1 for r in results if r.false_keeps) / nights)


def variants(base: Rules) -> list[Rules]:
    """The run's rules as given, and a few others around them."""
    return [base,
            Rules(f"{base.name}, --noise-runs 8", 8, base.noise_sigmas, base.confirm_runs, base.quarantine_factor,
                  base.quarantine_floor, base.min_delta),
            Rules(f"{base.name}, --confirm-runs 0", base.noise_runs, base.noise_sigmas, 0, base.quarantine_factor,
                  base.quarantine_floor, base.min_delta),
            Rules(f"{base.name}, --confirm-runs 2", base.noise_runs, base.noise_sigmas, 2, base.quarantine_factor,
                  base.quarantine_floor, base.min_delta),
            Rules("keep any improvement (the reference's rule: no noise floor, no confirmation, no quarantine)",
                  0, base.noise_sigmas, 0, 0.0, base.quarantine_floor, 0.0)]


def pm(value: tuple[float, float], digits: int = 2, scale: float = 1.0) -> str:
    return f"{value[0] * scale:.{digits}f} ± {value[1] * scale:.{digits}f}"


def report(summaries: list[Summary], objective: Objective) -> str:
    lines = [f"objective: baseline {objective.baseline_bpb:g} bpb, run-to-run noise std {objective.noise_std:g} bpb; "
             f"true gains: {objective.null_share:.0%} N(0, {objective.null_spread:g} sd), "
             f"{objective.harmful_share:.0%} harmful -Exp(mean {objective.harmful_mean:g} sd), "
             f"{objective.helpful_share:.0%} helpful +Exp(mean {objective.helpful_mean:g} sd)",
             "values: mean over nights ± standard error; gain in milli-bpb (1e-3 bpb)"]
    for s in summaries:
        lines += [f"rules: {s.rules}",
                  f"  executor {s.executor}, workers {s.workers}, {s.nights} nights of {s.proposals} proposals",
                  f"  false keeps per night: {pm(s.false_keeps_per_night, 3)}",
                  f"  true keeps per night: {pm(s.true_keeps_per_night, 3)}",
                  f"  true gain reached: {pm(s.true_gain_bpb, 2, 1000)} milli-bpb "
                  f"({pm(s.gain_share, 3)} of the available gain)",
                  f"  training runs per night: {pm(s.runs_per_night, 1)}",
                  f"  nights with a false keep: {s.nights_with_a_false_keep:.3f}"]
    return "\n".join(lines)


# --- The command -----------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=400)
    parser.add_argument("--proposals", type=int, default=100, help="proposals per night")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--executor", choices=sorted(EXECUTORS), default="serial")
    parser.add_argument("--workers", default="1", help="comma-separated counts; only 1 is simulated today")
    parser.add_argument("--noise-runs", type=int, default=4)
    parser.add_argument("--noise-sigmas", type=float, default=2.0)
    parser.add_argument("--confirm-runs", type=int, default=1)
    parser.add_argument("--quarantine-factor", type=float, default=10.0)
    parser.add_argument("--quarantine-floor", type=float, default=0.01)
    parser.add_argument("--min-delta", type=float, default=0.0)
    parser.add_argument("--variants", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure a few variants of the rules")
    parser.add_argument("--noise-std", type=float, default=Objective.noise_std)
    parser.add_argument("--null-share", type=float, default=Objective.null_share)
    parser.add_argument("--null-spread", type=float, default=Objective.null_spread, help="in noise stds")
    parser.add_argument("--harmful-share", type=float, default=Objective.harmful_share)
    parser.add_argument("--harmful-mean", type=float, default=Objective.harmful_mean, help="in noise stds")
    parser.add_argument("--helpful-mean", type=float, default=Objective.helpful_mean, help="in noise stds")
    parser.add_argument("--json", type=Path, help="also write the summaries to this file")
    args = parser.parse_args(argv)
    if args.nights < 1 or args.proposals < 1:
        parser.error("--nights and --proposals must be at least 1")
    if args.noise_runs < 0 or args.confirm_runs < 0 or args.noise_sigmas < 0 or args.min_delta < 0:
        parser.error("--noise-runs, --confirm-runs, --noise-sigmas and --min-delta must be >= 0")
    try:
        args.workers = [int(part) for part in str(args.workers).split(",") if part.strip()]
    except ValueError:
        parser.error(f"--workers takes comma-separated counts, not {args.workers!r}")
    if not args.workers or any(count < 1 for count in args.workers):
        parser.error("--workers takes counts of at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    objective = Objective(noise_std=args.noise_std, null_share=args.null_share, null_spread=args.null_spread,
                          harmful_share=args.harmful_share, harmful_mean=args.harmful_mean,
                          helpful_mean=args.helpful_mean)
    try:
        objective.check()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    base = Rules(f"--noise-runs {args.noise_runs} --noise-sigmas {args.noise_sigmas:g} --confirm-runs "
                 f"{args.confirm_runs} --quarantine-factor {args.quarantine_factor:g} --quarantine-floor "
                 f"{args.quarantine_floor:g}" + (f" --min-delta {args.min_delta:g}" if args.min_delta else ""),
                 args.noise_runs, args.noise_sigmas, args.confirm_runs, args.quarantine_factor,
                 args.quarantine_floor, args.min_delta)
    executor = EXECUTORS[args.executor]()
    summaries, skipped = [], []
    for workers in args.workers:
        if workers not in SUPPORTED_WORKERS[args.executor]:
            skipped.append(workers)
            continue
        for rules in variants(base) if args.variants else [base]:
            summaries.append(measure(executor, workers, objective, rules, args.nights, args.proposals, args.seed))
    print(report(summaries, objective))
    for workers in skipped:
        print(f"workers {workers}: not simulated: the {args.executor} executor has one lane; a concurrent executor "
              "(stale parents, rebase and re-measure) is issue 10's next phase")
    if args.json:
        from autoresearch.atomic import write_json_atomic

        write_json_atomic(args.json, {"objective": asdict(objective), "summaries": [asdict(s) for s in summaries],
                                      "not_simulated_workers": skipped})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
