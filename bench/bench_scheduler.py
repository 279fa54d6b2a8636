"""A simulated night, scaled down in time, through the real loop: trials per hour and the training share.

    python bench/bench_scheduler.py [--budget 2] [--trials 20] [--agent-means 0.2,0.6] [--workers 1]
                                    [--executor serial] [--startup 0.02] [--eval-delay 0.02] [--json PATH]

Everything but the model is real: `autoresearch.loop.run_night` in this process on a temporary git
project and a tiny sealed dataset (tests/conftest.py builds it), with its records, commits, guard,
sandboxed training processes and resets. What is simulated, each with its own clock:

- train.py: a stand-in honouring the contract. It reads TIME_BUDGET the way prepare.py defines it
  ($AUTORESEARCH_TIME_BUDGET; it does not import prepare.py, which imports torch), spends
  `--startup` x budget before its timer (data, model, a warm compile), then "trains" by sleeping
  the budget, writes its weights to $AUTORESEARCH_WEIGHTS_PATH (a small JSON: its idea and seed)
  and prints the `---` summary;
- the evaluator: answers after `--eval-delay` x budget with a score made from the weights' idea
  and seed (an `EvalResult` like autoresearch.evaluate's), so the keep rules, confirmation runs
  and resets run as in a night; about one idea in six is a real gain;
- the agent: a scripted proposer that waits a latency drawn from a gamma distribution (shape
  `--agent-shape`, mean = each of `--agent-means` x budget), then changes train.py's IDEA knob.

The run's trust defaults apply (--noise-runs 4, --confirm-runs 1, quarantine); the holdout is off.
Each piece writes when it worked (train.py its start-up and sleep, the evaluator and the agent
their waits), and the measurement reads those spans afterwards:

- training share: the seconds train.py slept (trained) over the lane's wall time, for the whole
  night (from `run_night`'s call to its return: set-up, baseline and noise floor included) and for
  the proposal phase (from the first proposal's request to the end);
- trials per hour, scaled to a 300 s budget: trials recorded per hour of wall time x budget / 300,
  i.e. as if every duration were scaled up with the budget. The costs that do not scale (starting
  each Python process, git, the records: the "other" seconds per trial, printed) are scaled up with
  them, so this figure is below what a real 300 s night with these ratios would reach (the
  same holds for the training share);
- a projection, printed as one: the same with every duration scaled up except those fixed costs,
  which stay at their measured seconds (what a 300 s night would see if they do not grow with it);
- where the wall time went: training, train.py's start-up, the rest of the training process
  (Python start-up under launch.py, saving), evaluation, the agent, and everything else (the harness).

Executors: `serial` is today's lane (one `Night`, one trial after another). `--workers` takes a
list of counts; a count the executor cannot run is reported as not measured, never given a number.
A concurrent executor is another `Executor` (same `run()` signature, spans tagged with the worker
that ran them); the instruments and the measurement stay as they are.

What this does not measure: a GPU (nothing here uses one: processes that wait for a device, or two
trials slowing each other, do not show), a real model's start-up, evaluation or agent, or crashes.
The machine's other load shifts the fixed costs; run it on a quiet machine for numbers to compare.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

from autoresearch import ledger, loop  # noqa: E402
from autoresearch.agent.base import Proposal, ProposalContext, Usage  # noqa: E402
from autoresearch.errors import UserError  # noqa: E402
from autoresearch.evaluate import EvalResult  # noqa: E402
from autoresearch.knobs import set_knobs  # noqa: E402
from autoresearch.runconfig import load_config  # noqa: E402
from autoresearch.view import NullView  # noqa: E402

REFERENCE_BUDGET = 300.0  # seconds: what trials per hour are scaled to
TIMING_FILE = "bench-timing.json"  # written by the stand-in train.py beside its weights
TRAINING, STARTUP, EVALUATION, AGENT = "training", "start-up", "evaluation", "agent"

TRAIN_PY = '''"""A stand-in train.py for bench/bench_scheduler.py: start-up, then "training" = sleeping the budget."""
import json
import os
import time

IDEA = 0  # the scripted agent changes this: every proposal is a new source
STARTUP_SECONDS = {startup!r}  # before the timer: data, model, a warm compile

process_started = time.time()
TIME_BUDGET = float(os.environ.get("AUTORESEARCH_TIME_BUDGET") or 300)  # as prepare.py reads it
SEED = int(os.environ.get("AUTORESEARCH_SEED") or 42)
weights = os.environ.get("AUTORESEARCH_WEIGHTS_PATH", "model.pt")
time.sleep(STARTUP_SECONDS)
training_started = time.time()
print("step 00001 (0.0%%) | loss: 3.000000 | remaining: %.0fs" % TIME_BUDGET, flush=True)
time.sleep(TIME_BUDGET)
training_ended = time.time()
with open(weights, "w") as handle:
    json.dump({{"idea": IDEA, "seed": SEED}}, handle)
with open(os.path.join(os.path.dirname(weights) or ".", "{timing}"), "w") as handle:
    json.dump({{"process_started": process_started, "training_started": training_started,
               "training_ended": training_ended}}, handle)
print("---")
print("training_seconds: %.1f" % (training_ended - training_started))
'''


# --- The plan of a night and what it recorded ---------------------------------------------------------


@dataclass(frozen=True)
class NightPlan:
    budget: float  # seconds of "training" per run
    trials: int  # proposals after the baseline and the noise floor
    agent_mean: float  # seconds: the agent's mean latency
    agent_shape: float  # the gamma distribution's shape (its coefficient of variation is 1/sqrt(shape))
    startup: float  # seconds train.py spends before its timer
    eval_delay: float  # seconds the evaluator takes
    noise_runs: int
    confirm_runs: int
    seed: int
    guard_package: bool = True


@dataclass(frozen=True)
class Span:
    worker: int
    kind: str  # training | start-up | evaluation | agent
    start: float  # time.time()
    end: float


@dataclass
class Timeline:
    """What an executor ran: its wall clock, the spans of work, and the trials it recorded."""

    executor: str
    workers: int
    started: float
    ended: float
    spans: list[Span]
    records: list[ledger.TrialRecord]
    proposal_phase_started: float | None  # the first proposal's request

    @property
    def wall(self) -> float:
        return self.ended - self.started


class Executor(Protocol):
    name: str
    max_workers: int

    def run(self, plan: NightPlan, workers: int, project: Path, data_dir: Path) -> Timeline:
        ...


# --- The instruments: the agent and the evaluator, each with its own clock --------------------------


class ScriptedAgent:
    """Waits a gamma-distributed latency, then changes IDEA: a new train.py for every proposal."""

    name = "bench-scripted"

    def __init__(self, mean: float, shape: float, seed: int):
        self.mean, self.shape = mean, shape
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.waits: list[tuple[float, float]] = []
        self.calls = 0

    def propose(self, context: ProposalContext) -> Proposal:
        with self.lock:
            latency = self.rng.gammavariate(self.shape, self.mean / self.shape) if self.mean > 0 else 0.0
        started = time.time()
        time.sleep(latency)
        ended = time.time()
        with self.lock:
            self.waits.append((started, ended))
        path = context.worktree / "train.py"
        with self.lock:
            self.calls += 1
            idea = self.calls  # new for every call: no source is proposed twice
        path.write_text(set_knobs(path.read_text(encoding="utf-8"), {"IDEA": idea}), encoding="utf-8")
        return Proposal(f"idea {idea}", Usage(input_tokens=100, output_tokens=10), [{"role": "bench", "idea": idea}])


class DelayedEvaluator:
    """Answers after a fixed delay with a score made from the weights' idea and seed (no model)."""

    HELPFUL_SHARE, GAIN, NOISE_STD = 1 / 6, 0.004, 0.001  # bpb

    def __init__(self, delay: float, seed: int):
        self.delay, self.seed = delay, seed
        self.lock = threading.Lock()
        self.waits: list[tuple[float, float]] = []

    def __call__(self, train_py: Path, weights: Path, data_dir: Path, **options: object) -> EvalResult:
        started = time.time()
        time.sleep(self.delay)
        try:
            content = json.loads(Path(weights).read_text())
            idea, run_seed = int(content["idea"]), int(content["seed"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            return EvalResult(ok=False, split=str(options.get("split", "val")), bpb=None, loss_nats=None, tokens=0,
                              bytes=0, causal_ok=None, failure_kind="weights_error", reason=str(error),
                              seconds=time.time() - started)
        helpful = idea and random.Random(f"{self.seed}:{idea}").random() < self.HELPFUL_SHARE
        noise = random.Random(f"{self.seed}:{idea}:{run_seed}").gauss(0.0, self.NOISE_STD)
        bpb = 1.0 - (self.GAIN if helpful else 0.0) + noise
        ended = time.time()
        with self.lock:
            self.waits.append((started, ended))
        return EvalResult(ok=True, split=str(options.get("split", "val")), bpb=bpb, loss_nats=bpb * 0.7, tokens=1,
                          bytes=1, causal_ok=True, failure_kind=None, reason=None, seconds=ended - started)


def training_spans(run_dir: Path, worker_of_trial: dict[int, int]) -> list[Span]:
    """train.py's start-up and sleep in every run of the night, from the files it wrote."""
    spans = []
    for path in sorted(run_dir.glob(f"trial-*/**/{TIMING_FILE}")):  # a trial's first run and its confirm-K/
        trial = int(next(part for part in path.relative_to(run_dir).parts if part.startswith("trial-"))[6:])
        timing = json.loads(path.read_text())
        worker = worker_of_trial.get(trial, 0)
        spans.append(Span(worker, STARTUP, timing["process_started"], timing["training_started"]))
        spans.append(Span(worker, TRAINING, timing["training_started"], timing["training_ended"]))
    return spans


# --- The executors ---------------------------------------------------------------------------------


class SerialExecutor:
    """Today's lane: `loop.run_night`, one trial after another on one device."""

    name = "serial"
    max_workers = 1

    def run(self, plan: NightPlan, workers: int, project: Path, data_dir: Path) -> Timeline:
        if workers != 1:
            raise ValueError("the serial executor runs one lane")
        tag = f"bench-{int(plan.agent_mean * 1000)}"
        config = load_config({"budget": plan.budget, "tag": tag, "data_dir": str(data_dir), "device": "cpu",
                              "max_trials": plan.trials + 1, "agent": "offline", "noise_runs": plan.noise_runs,
                              "confirm_runs": plan.confirm_runs, "holdout": False, "startup_allowance": 30},
                             project_dir=project, environ={})
        config.guard_package = plan.guard_package
        config.kill_grace = 1.0
        agent = ScriptedAgent(plan.agent_mean, plan.agent_shape, plan.seed)
        evaluator = DelayedEvaluator(plan.eval_delay, plan.seed)
        started = time.time()
        outcome = loop.run_night(config, proposer=agent, view=NullView(), evaluator=evaluator, handle_signals=False)
        ended = time.time()
        if outcome.status != ledger.RUN_FINISHED or outcome.exit_code:
            raise RuntimeError(f"the night did not finish: {outcome.status}: {outcome.stop_reason}")
        records = ledger.read_trials(outcome.run_dir).records
        spans = training_spans(outcome.run_dir, {})
        spans += [Span(0, AGENT, start, end) for start, end in agent.waits]
        spans += [Span(0, EVALUATION, start, end) for start, end in evaluator.waits]
        return Timeline(self.name, 1, started, ended, spans, records,
                        min((start for start, _ in agent.waits), default=None))


EXECUTORS: dict[str, type] = {"serial": SerialExecutor}


# --- The measurement -------------------------------------------------------------------------------


def clipped(spans: Sequence[Span], start: float, end: float) -> float:
    return math.fsum(max(0.0, min(span.end, end) - max(span.start, start)) for span in spans)


@dataclass
class Measurement:
    executor: str
    workers: int
    agent_mean_fraction: float
    budget: float
    wall_seconds: float
    trials: int  # records of the night: baseline, noise floor and proposals
    proposals: int
    statuses: dict[str, int]
    training_share: float  # the whole night, per worker then averaged (one worker today)
    training_share_per_worker: list[float]
    proposal_phase_seconds: float | None
    proposal_phase_training_share: float | None
    trials_per_hour_scaled: float  # the whole night, scaled to a 300 s budget
    proposals_per_hour_scaled: float | None  # the proposal phase
    split: dict[str, float] = field(default_factory=dict)  # shares of the wall time (per worker, averaged)
    other_seconds_per_trial: float = 0.0  # the fixed costs that do not scale: harness and process start-up
    # A projection from the same spans, not a measurement: every duration scaled to a 300 s budget
    # except those fixed costs, kept at their measured seconds.
    projected_training_share: float = 0.0
    projected_trials_per_hour: float = 0.0


def measure(timeline: Timeline, plan: NightPlan, agent_fraction: float) -> Measurement:
    wall = timeline.wall
    scale = plan.budget / REFERENCE_BUDGET
    per_worker = [clipped([s for s in timeline.spans if s.worker == w and s.kind == TRAINING],
                          timeline.started, timeline.ended) / wall for w in range(timeline.workers)]
    proposals = [r for r in timeline.records if not r.extra.get("baseline") and not r.extra.get("noise_floor")]
    phase_start = timeline.proposal_phase_started
    phase_seconds = phase_share = phase_rate = None
    if phase_start is not None:
        phase_seconds = timeline.ended - phase_start
        training = clipped([s for s in timeline.spans if s.kind == TRAINING], phase_start, timeline.ended)
        phase_share = training / phase_seconds / timeline.workers
        phase_rate = len(proposals) / phase_seconds * 3600 * scale
    process = math.fsum(r.training_seconds or 0.0 for r in timeline.records)
    seconds = {kind: clipped([s for s in timeline.spans if s.kind == kind], timeline.started, timeline.ended)
               for kind in (TRAINING, STARTUP, EVALUATION, AGENT)}
    split = {kind: value / wall / timeline.workers for kind, value in seconds.items()}
    split["rest of the training process"] = max(0.0, process - seconds[TRAINING] - seconds[STARTUP]) / wall / \
        timeline.workers
    split["other (harness, set-up)"] = max(0.0, 1.0 - sum(split.values()))
    unscaled = split["other (harness, set-up)"] + split["rest of the training process"]
    other_per_trial = unscaled * wall * timeline.workers / max(1, len(timeline.records))
    fixed = unscaled * wall * timeline.workers  # worker-seconds
    factor = REFERENCE_BUDGET / plan.budget
    projected_wall = (wall * timeline.workers - fixed) * factor + fixed  # worker-seconds at a 300 s budget
    projected_share = seconds[TRAINING] * factor / projected_wall
    projected_rate = len(timeline.records) / (projected_wall / timeline.workers) * 3600
    return Measurement(
        projected_training_share=projected_share, projected_trials_per_hour=projected_rate,
        executor=timeline.executor, workers=timeline.workers, agent_mean_fraction=agent_fraction, budget=plan.budget,
        wall_seconds=wall, trials=len(timeline.records), proposals=len(proposals),
        statuses=dict(collections.Counter(r.status for r in timeline.records)),
        training_share=sum(per_worker) / len(per_worker), training_share_per_worker=per_worker,
        proposal_phase_seconds=phase_seconds, proposal_phase_training_share=phase_share,
        trials_per_hour_scaled=len(timeline.records) / wall * 3600 * scale, proposals_per_hour_scaled=phase_rate,
        split=split, other_seconds_per_trial=other_per_trial)


def describe(m: Measurement) -> str:
    phase = "" if m.proposal_phase_seconds is None else (
        f"\n  proposal phase: {m.proposals} proposals in {m.proposal_phase_seconds:.1f} s: training share "
        f"{m.proposal_phase_training_share:.1%}, {m.proposals_per_hour_scaled:.2f} proposals per hour (scaled)")
    split = ", ".join(f"{kind} {share:.1%}" for kind, share in m.split.items())
    return (f"executor {m.executor}, workers {m.workers}, agent mean {m.agent_mean_fraction:g} x budget\n"
            f"  night: {m.trials} trials in {m.wall_seconds:.1f} s ({m.statuses}): training share "
            f"{m.training_share:.1%}, {m.trials_per_hour_scaled:.2f} trials per hour (scaled to a "
            f"{REFERENCE_BUDGET:g} s budget){phase}\n"
            f"  wall time: {split}\n"
            f"  fixed costs that do not scale (harness, set-up, training process beyond train.py's own clock) "
            f"per trial: {m.other_seconds_per_trial:.3f} s\n"
            f"  projection (not measured): with every duration scaled to a {REFERENCE_BUDGET:g} s budget except those "
            f"fixed costs: training share {m.projected_training_share:.1%}, {m.projected_trials_per_hour:.2f} trials "
            "per hour")


# --- The set-up and the command --------------------------------------------------------------------


def make_project(root: Path, startup: float) -> Path:
    project = root / "project"
    project.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "prepare.py", project / "prepare.py")
    (project / "train.py").write_text(TRAIN_PY.format(startup=round(startup, 6), timing=TIMING_FILE))
    (project / "program.md").write_text("# program\n\nbenchmark night\n")
    (project / ".gitignore").write_text("runs/\n__pycache__/\n")
    for command in (["init", "-q", "-b", "main"], ["add", "-A"],
                    ["-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-q", "-m", "start"]):
        subprocess.run(["git", *command], cwd=project, check=True, capture_output=True)
    return project


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def counts(text: str, name: str, kind: type = float) -> list:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"error: {name} takes comma-separated numbers, not {text!r}") from None
    if not values:
        raise SystemExit(f"error: {name} needs at least one value")
    return values


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of training per run")
    parser.add_argument("--trials", type=int, default=20, help="proposals after the baseline and the noise floor")
    parser.add_argument("--agent-means", default="0.2,0.6", help="the agent's mean latencies, as fractions of the budget")
    parser.add_argument("--agent-shape", type=float, default=4.0, help="gamma shape of the agent's latency")
    parser.add_argument("--startup", type=float, default=0.02, help="train.py's start-up, as a fraction of the budget")
    parser.add_argument("--eval-delay", type=float, default=0.02, help="the evaluator's delay, as a fraction of the budget")
    parser.add_argument("--noise-runs", type=int, default=4)
    parser.add_argument("--confirm-runs", type=int, default=1)
    parser.add_argument("--executor", choices=sorted(EXECUTORS), default="serial")
    parser.add_argument("--workers", default="1", help="comma-separated worker counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guard-package", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", type=Path, help="also write the measurements to this file")
    args = parser.parse_args(argv)
    args.agent_means = counts(args.agent_means, "--agent-means")
    args.workers = counts(args.workers, "--workers", int)
    if args.budget <= 0 or args.trials < 1:
        parser.error("--budget must be > 0 and --trials at least 1")
    if any(value < 0 for value in (*args.agent_means, args.startup, args.eval_delay)) or args.agent_shape <= 0:
        parser.error("latencies and delays must be >= 0 and --agent-shape > 0")
    if args.noise_runs < 0 or args.confirm_runs < 0 or any(count < 1 for count in args.workers):
        parser.error("--noise-runs and --confirm-runs must be >= 0, --workers counts at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    from conftest import (
        build_tiny_dataset,  # tests/conftest.py: a real dataset, small enough to build in a second
    )

    executor = EXECUTORS[args.executor]()
    measurements, skipped = [], [count for count in args.workers if count > executor.max_workers]
    print(f"budget {args.budget:g} s, start-up {args.startup:g} x budget, evaluation {args.eval_delay:g} x budget, "
          f"agent gamma(shape {args.agent_shape:g}); {args.trials} proposals after the baseline and "
          f"{args.noise_runs} noise-floor runs, --confirm-runs {args.confirm_runs}")
    with tempfile.TemporaryDirectory(prefix="bench-scheduler-") as scratch:
        root = Path(scratch)
        data_dir = build_tiny_dataset(root / "data" / "tiny")
        for workers in (count for count in args.workers if count <= executor.max_workers):
            for fraction in args.agent_means:
                plan = NightPlan(budget=args.budget, trials=args.trials, agent_mean=fraction * args.budget,
                                 agent_shape=args.agent_shape, startup=args.startup * args.budget,
                                 eval_delay=args.eval_delay * args.budget, noise_runs=args.noise_runs,
                                 confirm_runs=args.confirm_runs, seed=args.seed, guard_package=args.guard_package)
                project = make_project(root / f"w{workers}-a{fraction:g}", plan.startup)
                try:
                    timeline = executor.run(plan, workers, project, data_dir)
                except (UserError, RuntimeError) as error:
                    print(f"error: {error}", file=sys.stderr)
                    return 1
                measurement = measure(timeline, plan, fraction)
                measurements.append(measurement)
                print(describe(measurement), flush=True)
    for count in skipped:
        print(f"workers {count}: not measured: the {executor.name} executor runs {executor.max_workers} lane; "
              "the concurrent executor is issue 10's next phase")
    if args.json:
        from autoresearch.atomic import write_json_atomic

        write_json_atomic(args.json, {"settings": {key: (str(value) if isinstance(value, Path) else value)
                                                   for key, value in vars(args).items()},
                                      "measurements": [asdict(m) for m in measurements],
                                      "not_measured_workers": skipped})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
