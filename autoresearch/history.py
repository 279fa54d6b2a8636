"""The history of a run: everything the loop derives from its records, as a pure value.

`History` is built from the run's trial records (ledger.TrialRecord, in the order they were
recorded), the few settings the rules need (`HistorySettings`: the run's seed, --noise-runs,
--noise-sigmas, --min-delta, --max-repairs) and the baseline commit. It answers what the loop asks
before and after each trial: the best commit, the baseline, the noise floor and the keep
threshold (trust.py has the rules; this gathers their numbers), the reference a candidate is
compared with, the sources already tried, the totals, what the next trial is, and the repair to
plan after a crash. It reads no file, runs no git and keeps no clock: a resume rebuilds it from
`trials.jsonl` and gets the same answers as the session that wrote the records.

A history is never changed in place: `add(record)` returns the history with one more record
(ask/tell: `start(spec)` notes a trial in flight, `add` takes its record back). The serial loop
has no trial in flight between trials; the shape is there for a scheduler that runs several.
Trials in flight count for the next trial number and the noise-floor seeds still to run, and
for nothing else (they have no score yet).

What this does not protect against: records that contradict each other (two keeps of one trial
number, a record edited by hand); the loop's resume (loop.py) makes the records agree with git
before a history is built from them. Records are held, not copied: a caller that changes a record
after adding it changes the history too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

from autoresearch import trust
from autoresearch.ledger import CRASH, DISCARD, INTERRUPTED, KEEP, STATUSES, TrialRecord

if TYPE_CHECKING:
    from autoresearch.runconfig import RunConfig

KIND_BASELINE, KIND_NOISE, KIND_PROPOSAL = "baseline", "noise floor", "proposal"  # the kinds of trial
DEFAULT_CRASH_LOG = "train.log"  # a crashed trial's log in its trial directory, unless its record names another


@dataclass(frozen=True)
class HistorySettings:
    """The run's settings that the history's answers depend on."""

    seed: int  # the run's seed: the baseline's and every proposal's first run
    noise_runs: int  # extra seeds of the baseline (the noise floor)
    noise_sigmas: float
    min_delta: float
    max_repairs: int  # repair attempts after a crash

    @classmethod
    def of(cls, config: RunConfig) -> HistorySettings:
        return cls(seed=config.seed, noise_runs=config.noise_runs, noise_sigmas=config.noise_sigmas,
                   min_delta=config.min_delta, max_repairs=config.max_repairs)


@dataclass
class Best:
    trial: int | None  # None before the baseline scored
    commit: str
    val_bpb: float | None

    def as_dict(self) -> dict:
        return {"trial": self.trial, "commit": self.commit, "val_bpb": self.val_bpb}


class Reference(NamedTuple):
    """What a candidate is compared with: the best commit's mean over its seeds, and its name in words."""

    val_bpb: float | None  # None only before the baseline scored
    words: str


@dataclass(frozen=True)
class RepairPlan:
    """The next proposal repairs a crash: the chain's first crash, the commit to start from, the attempt."""

    crashed_trial: int  # the crash the chain of repairs started from
    crashed_commit: str  # the train.py the repair starts from (the last crash of the chain)
    attempt: int  # 1 for the first repair
    last_trial: int  # the trial whose log the agent is told
    crash_log: str  # that log, relative to the trial's directory


@dataclass(frozen=True)
class TrialSpec:
    """A trial handed out and not yet recorded: its number, kind, seed, parent and repair attempt."""

    trial: int
    kind: str
    seed: int
    parent: str
    repair_attempt: int = 0


@dataclass(frozen=True)
class History:
    records: tuple[TrialRecord, ...]
    settings: HistorySettings
    baseline_commit: str
    in_flight: tuple[TrialSpec, ...] = ()

    @classmethod
    def of(cls, records: Iterable[TrialRecord], settings: HistorySettings, baseline_commit: str) -> History:
        return cls(tuple(records), settings, baseline_commit)

    def add(self, record: TrialRecord) -> History:
        """The history with `record` recorded (and no longer in flight)."""
        return replace(self, records=(*self.records, record),
                       in_flight=tuple(spec for spec in self.in_flight if spec.trial != record.trial))

    def start(self, spec: TrialSpec) -> History:
        """The history with `spec` in flight."""
        return replace(self, in_flight=(*self.in_flight, spec))

    # -- the best and the baseline

    @property
    def best(self) -> Best:
        """The last kept trial; before anything was kept, the baseline commit with no score."""
        kept = [record for record in self.records if record.status == KEEP and record.commit]
        if kept:
            last = kept[-1]
            return Best(last.trial, last.commit, last.val_bpb)
        return Best(None, self.baseline_commit, None)

    def baseline_record(self) -> TrialRecord | None:
        """The first kept trial: the baseline (every later keep had to beat it)."""
        return next((record for record in self.records if record.status == KEEP), None)

    def baseline_val_bpb(self) -> float | None:
        baseline = self.baseline_record()
        return baseline.val_bpb if baseline is not None else None

    def baseline_trial(self) -> int | None:
        baseline = self.baseline_record()
        return baseline.trial if baseline is not None else None

    # -- the noise floor and the keep rule (trust.py has the rules; these gather the numbers)

    def score_groups(self) -> dict[str, list[tuple[int, float]]]:
        """(seed, val_bpb) of every scored run, by commit: the baseline's seeds, a candidate's runs."""
        groups: dict[str, list[tuple[int, float]]] = {}
        for record in self.records:
            if record.status not in (KEEP, DISCARD) or record.val_bpb is None or not record.commit:
                continue
            runs = record.extra.get("runs") or [{"seed": record.seed, "val_bpb": record.val_bpb}]
            groups.setdefault(record.commit, []).extend((run["seed"], float(run["val_bpb"])) for run in runs)
        return groups

    def baseline_runs(self) -> list[tuple[int, float]]:
        """(seed, val_bpb) of the baseline and its noise-floor runs."""
        baseline = self.baseline_record()
        return self.score_groups().get(baseline.commit, []) if baseline is not None else []

    def threshold(self) -> trust.Threshold:
        """max(--min-delta, --noise-sigmas x the std of the baseline's seeds); --min-delta before it is known."""
        scores = [score for _, score in self.baseline_runs()]
        return trust.keep_threshold(trust.sample_std(scores), max(0, len(scores) - 1),
                                    sigmas=self.settings.noise_sigmas, min_delta=self.settings.min_delta)

    def reference(self) -> Reference:
        """The best commit's mean val_bpb over its seeds, and how to name it in words."""
        best = self.best
        runs = self.score_groups().get(best.commit) or [(self.settings.seed, best.val_bpb)]
        who = "the baseline" if best.trial == self.baseline_trial() else f"the best (trial {best.trial})"
        if len(runs) == 1:
            return Reference(runs[0][1], who)
        return Reference(trust.mean([score for _, score in runs]), f"{who}'s mean over {len(runs)} seeds")

    def largest_kept_gain(self) -> float | None:
        """The largest gain of a kept proposal over its reference (the baseline's keep is no gain)."""
        baseline = self.baseline_trial()
        gains = [-record.delta for record in self.records
                 if record.status == KEEP and record.delta is not None and record.trial != baseline]
        return max(gains) if gains else None

    def pending_noise_seeds(self) -> list[int]:
        """The noise-floor seeds still to run: only between the baseline and the first proposal."""
        baseline = self.baseline_trial()
        if baseline is None:
            return []
        later = [record for record in self.records if record.trial > baseline and record.status != INTERRUPTED]
        if any(not record.extra.get("noise_floor") for record in later) \
                or any(spec.kind != KIND_NOISE for spec in self.in_flight if spec.trial > baseline):
            return []  # proposals have started: the noise floor is what it is
        done = {record.seed for record in later if record.status == DISCARD and record.val_bpb is not None}
        done |= {spec.seed for spec in self.in_flight if spec.kind == KIND_NOISE}
        return [seed for seed in trust.noise_seeds(self.settings.seed, self.settings.noise_runs) if seed not in done]

    def noise_failures(self, seed: int | None) -> int:
        """How often the noise-floor run with `seed` failed (interruptions do not count)."""
        return sum(1 for record in self.records if record.extra.get("noise_floor") and record.seed == seed
                   and record.status not in (DISCARD, INTERRUPTED))

    def noise_floor_training_seconds(self) -> tuple[float, ...]:
        """The harness's clock around each scored noise-floor run: the warm start-ups' yardstick (trust.startup_rule)."""
        return tuple(record.training_seconds for record in self.records
                     if record.extra.get("noise_floor") and record.status in (KEEP, DISCARD)
                     and record.training_seconds is not None)

    def noise_floor(self) -> dict | None:
        """run.json's `noise_floor`: the baseline's seeds and scores, the std, the threshold (None below two runs)."""
        runs = self.baseline_runs()
        if len(runs) < 2:
            return None
        return trust.noise_floor_record([seed for seed, _ in runs], [score for _, score in runs], self.threshold())

    # -- what was tried, and what it cost

    def seen_sources(self) -> dict[str, int]:
        """sha256 of train.py -> the first trial with it; an interrupted trial's source was never tried."""
        seen: dict[str, int] = {}
        for record in self.records:
            if record.train_py_sha256 and record.status != INTERRUPTED:
                seen.setdefault(record.train_py_sha256, record.trial)
        return seen

    def counted_trials(self) -> int:
        """The trials --max-trials counts: not the noise-floor runs (they measure the baseline), nor the
        proposals the agent never delivered (an outage, an agent bug: nothing was tried)."""
        return sum(1 for record in self.records
                   if not record.extra.get("noise_floor") and not record.extra.get("agent_error"))

    def cost_usd(self) -> float:
        return sum(record.cost_usd for record in self.records)

    def totals(self) -> dict:
        counts = {status: 0 for status in STATUSES}
        tokens: dict[str, int] = {}
        for record in self.records:
            counts[record.status] = counts.get(record.status, 0) + 1
            for name, value in record.tokens.items():
                tokens[name] = tokens.get(name, 0) + int(value)
        best = self.best
        return {"best_val_bpb": best.val_bpb, "baseline_val_bpb": self.baseline_val_bpb(),
                "best_trial": best.trial, "counts": counts, "tokens": tokens,
                "cost_usd": self.cost_usd(), "trials": len(self.records)}

    # -- what comes next

    def next_trial(self) -> int:
        """The next trial number: one past every recorded trial and every trial in flight."""
        numbers = [record.trial for record in self.records] + [spec.trial for spec in self.in_flight]
        return max(numbers, default=-1) + 1

    def next_kind(self) -> tuple[str, int]:
        """What the next trial is (baseline, noise-floor run or proposal) and the seed it trains with."""
        if self.best.val_bpb is None:
            return KIND_BASELINE, self.settings.seed
        pending = self.pending_noise_seeds()
        if pending:
            return KIND_NOISE, pending[0]
        return KIND_PROPOSAL, self.settings.seed

    def next_spec(self) -> TrialSpec:
        """The next trial to hand out: its number, kind and seed, the best commit as its parent, its repair attempt."""
        kind, seed = self.next_kind()
        plan = self.repair_plan() if kind == KIND_PROPOSAL else None
        return TrialSpec(self.next_trial(), kind, seed, self.best.commit, plan.attempt if plan else 0)

    def repair_plan(self) -> RepairPlan | None:
        """The repair the next proposal makes, decided by the last record: a proposal that crashed.

        A crash of the baseline or of a noise-floor run is the baseline's own code: nobody's
        repair. The chain of repairs of one crash goes back to that crash (attempt 0); after
        --max-repairs attempts, or once the best has no score, the next proposal is fresh.
        """
        last = self.records[-1] if self.records else None
        if last is None or last.status != CRASH or not last.commit \
                or last.extra.get("noise_floor") or last.extra.get("baseline"):
            return None
        if last.repair_attempt >= self.settings.max_repairs or self.best.val_bpb is None:
            return None
        crashed = last.trial
        if last.repair_attempt:  # a repair of an earlier crash: the chain goes back to that crash
            chain = [record for record in self.records if record.trial < last.trial and record.status == CRASH
                     and record.repair_attempt == 0]
            crashed = chain[-1].trial if chain else last.trial
        return RepairPlan(crashed, last.commit, last.repair_attempt + 1, last.trial,
                          str(last.extra.get("crash_log", DEFAULT_CRASH_LOG)))
