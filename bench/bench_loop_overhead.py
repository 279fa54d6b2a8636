"""How long the harness itself takes per trial: everything but training, evaluation and the agent.

    python bench/bench_loop_overhead.py [--trials 20] [--guard-package/--no-guard-package]

A real run in a temporary git project on the CPU, with the real offline proposer (no LLM), a
train.py that writes its weights and exits at once (so "training" is only a Python start-up
under launch.py), and an evaluator that answers at once with a made-up, slowly improving score.
What remains is the harness: reading program.md, the worktree checks, validation, the commit,
the integrity fingerprints, starting and reaping the training process group, the records and
the reset. Each of those is timed by wrapping the function that does it; the script prints the
mean per trial for each and the overhead = total - training - evaluation - agent. Target: <= 2 s.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from conftest import build_tiny_dataset  # noqa: E402

from autoresearch import gitops, integrity, ledger, loop, runner  # noqa: E402
from autoresearch.evaluate import EvalResult  # noqa: E402
from autoresearch.runconfig import load_config  # noqa: E402
from autoresearch.view import NullView  # noqa: E402

TRAIN_PY = '''"""A train.py that trains nothing: it saves empty weights and exits (for the overhead benchmark)."""
import os

MATRIX_LR = 0.04
EMBEDDING_LR = 0.6
WEIGHT_DECAY = 0.1
DEPTH = 8
DEVICE_BATCH_SIZE = 64

open(os.environ["AUTORESEARCH_WEIGHTS_PATH"], "wb").close()
print("---")
print("training_seconds: 0.0")
'''

timings: dict[str, list[float]] = collections.defaultdict(list)


def timed(owner: object, name: str, label: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            timings[label].append(time.perf_counter() - started)

    setattr(owner, name, wrapper)


def fake_evaluator():
    scores = iter(3.0 - 0.001 * i * (-1) ** i for i in range(10_000))

    def evaluate(train_py, weights, data_dir, **kwargs) -> EvalResult:
        return EvalResult(ok=True, split="val", bpb=next(scores), loss_nats=1.0, tokens=1, bytes=1,
                          causal_ok=True, failure_kind=None, reason=None, seconds=0.0)
    return evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--guard-package", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-loop-") as scratch:
        root = Path(scratch)
        data_dir = build_tiny_dataset(root / "data" / "tiny")
        from autoresearch.data.manifest import seal_dataset

        seal_dataset(data_dir, json.loads((data_dir / "manifest.json").read_text()))
        project = root / "project"
        project.mkdir()
        shutil.copy(REPO_ROOT / "prepare.py", project / "prepare.py")
        (project / "train.py").write_text(TRAIN_PY)
        (project / "program.md").write_text("benchmark\n")
        (project / ".gitignore").write_text("runs/\n")
        for command in (["init", "-q"], ["add", "-A"],
                        ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "start"]):
            subprocess.run(["git", *command], cwd=project, check=True)

        for owner, name, label in [
            (loop.Night, "_read_program_md", "read program.md"),
            (loop.Night, "_validate", "validate proposal"),
            (loop.Night, "_fresh_worktree", "worktree clean check/reset before proposing"),
            (loop.Night, "_commit", "commit + trial files"),
            (integrity.Guard, "snapshot", "integrity fingerprints (before)"),
            (integrity.Guard, "changes", "integrity fingerprints (after)"),
            (runner, "run_training", "training subprocess (start-up to reaped)"),
            (runner, "wait_for_gpu_release", "GPU release wait"),
            (loop.Night, "_decide", "decide (incl. worktree status)"),
            (ledger, "append_trial", "append record"),
            (ledger, "write_run_state", "write run.json"),
            (gitops.Workspace, "reset_to", "reset worktree to best"),
        ]:
            timed(owner, name, label)

        config = load_config({"budget": 5, "tag": "bench", "data_dir": str(data_dir), "device": "cpu",
                              "max_trials": args.trials + 1, "agent": "offline", "noise_runs": 0, "confirm_runs": 0,
                              "holdout": False}, project_dir=project, environ={})
        config.guard_package = args.guard_package
        started = time.perf_counter()
        outcome = loop.run_night(config, view=NullView(), evaluator=fake_evaluator(), handle_signals=False)
        wall = time.perf_counter() - started
        records = ledger.read_trials(outcome.run_dir).records[1:]  # leave out the baseline

    n = len(records)
    mean = lambda values: sum(values) / max(1, len(values))  # noqa: E731
    total = mean([r.total_seconds for r in records])
    training = mean([r.training_seconds or 0.0 for r in records])
    evaluation = mean([r.evaluation_seconds or 0.0 for r in records])
    agent = mean([r.agent_seconds or 0.0 for r in records])
    print(f"{n} trials after the baseline ({wall:.1f} s wall for the whole run, baseline and set-up included)")
    print(f"statuses: {dict(collections.Counter(r.status for r in records))}")
    print(f"per trial: total {total * 1000:.0f} ms = training {training * 1000:.0f} ms + evaluation "
          f"{evaluation * 1000:.0f} ms + agent {agent * 1000:.0f} ms + harness {1000 * (total - training - evaluation - agent):.0f} ms")
    print("breakdown (mean ms per call, calls per trial):")
    for label, values in timings.items():
        print(f"  {label:<45} {1000 * mean(values):8.1f} ms  x{len(values) / (n + 1):.1f}")
    print(f"harness overhead per trial: {total - training - evaluation - agent:.3f} s (target <= 2 s); "
          f"training here is only the Python start-up of launch.py and train.py")


if __name__ == "__main__":
    main()
