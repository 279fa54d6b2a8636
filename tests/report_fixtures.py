"""Recorded runs for the report tests, written the way the loop writes them (ledger.append_trial).

`write_night` is a finished night with every status, two program.md versions, holdout scores and
a measured noise floor; `write_running` is a run still going (no holdout, no noise floor, a trial
directory without a record yet); `write_reference_tsv` is a results.tsv in the reference's format.
Every timestamp and path inside them is fixed, so reports of them can be compared to golden files.
"""

from __future__ import annotations

import json
from pathlib import Path

from autoresearch import ledger

PROGRAM_A = "a" * 64
PROGRAM_B = "b" * 64
TOKENS = {"input": 120_000, "output": 4_000, "cache_read": 90_000, "cache_write": 8_000}
OOM = ("Traceback (most recent call last):\n  File \"/home/me/night/train.py\", line {line}, in <module>\n"
       "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {size} GiB")

# trial, status, description, val_bpb, holdout_bpb, program, failure_reason
NIGHT = [
    (0, "keep", "baseline", 1.000000, 1.010000, PROGRAM_A, None),
    (1, "discard", "raise the matrix learning rate to 0.06", 1.002000, None, PROGRAM_A, None),
    (2, "keep", "warm up over the first 5% of steps", 0.990000, None, PROGRAM_A, None),
    (3, "crash", "double the batch size", None, None, PROGRAM_A, OOM.format(line=212, size="2.00")),
    (4, "crash", "double the model width", None, None, PROGRAM_A, OOM.format(line=98, size="8.50")),
    (5, "timeout", "compile with max-autotune", None, None, PROGRAM_A, "ran past the budget by 42 s"),
    (6, "rejected", "tune the evaluation", None, None, PROGRAM_A, "the edit touched prepare.py (line 12)"),
    (7, "keep", "RMSNorm before attention", 0.985000, None, PROGRAM_B, None),
    (8, "discard", "swap GELU for ReLU squared", 0.986100, None, PROGRAM_B, None),
    (9, "rejected", "read the val shard", None, None, PROGRAM_B, "the edit touched prepare.py (line 40)"),
    (10, "interrupted", "longer warmdown", None, None, PROGRAM_B, "stopped by the user"),
    (11, "keep", "deeper model: 10 layers | narrower heads", 0.980000, 0.991000, PROGRAM_B, None),
    (12, "discard", "drop the learning-rate schedule", 1.300000, None, PROGRAM_B, None),
]


def _record(trial: int, status: str, description: str, val_bpb, holdout, program: str, reason,
            best_before: float | None, day: str) -> ledger.TrialRecord:
    minute = trial * 7
    scored = val_bpb is not None and status in ("keep", "discard")
    return ledger.TrialRecord(
        trial=trial, status=status, description=description, parent=f"{trial:07d}",
        commit=f"{trial + 1:07x}" * 2,
        started_at=f"{day}T22:{minute:02d}:00+00:00", ended_at=f"{day}T22:{minute + 6:02d}:10+00:00",
        val_bpb=val_bpb,
        delta=(val_bpb - best_before) if scored and best_before is not None and trial else None,
        holdout_bpb=holdout,
        training_seconds=300.0 if status != "rejected" else None,
        evaluation_seconds=20.0 if scored else None,
        agent_seconds=40.0 if trial else None,
        total_seconds=370.0, peak_memory_gb=40.2 if scored else None,
        program_md_sha256=program, failure_reason=reason,
        decision="beat the best by more than the keep threshold" if status == "keep" and trial else None,
        tokens=dict(TOKENS) if trial else {}, cost_usd=0.25 if trial else 0.0)


def _write_rows(run_dir: Path, rows, day: str) -> None:
    best = None
    for trial, status, description, val_bpb, holdout, program, reason in rows:
        record = _record(trial, status, description, val_bpb, holdout, program, reason, best, day)
        if status == "keep" and val_bpb is not None:
            best = val_bpb
        record.best_val_bpb = best
        ledger.append_trial(run_dir, record)
        trial_dir = run_dir / f"trial-{trial:04d}"
        trial_dir.mkdir(exist_ok=True)
        if status == "keep" and trial:
            (trial_dir / "diff.patch").write_text(
                f"--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-# before trial {trial}\n+# {description}\n")


def write_run_json(run_dir: Path, **fields) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(fields, indent=2))


def write_night(runs_dir: Path, tag: str = "night") -> Path:
    """A finished night: every status, two program.md versions, holdout and noise floor recorded."""
    run_dir = runs_dir / tag
    write_run_json(
        run_dir, tag=tag, branch=f"autoresearch/{tag}", project_dir="/nonexistent/project",
        worktree="/nonexistent/project/.autoresearch/worktrees/night", created_at="2026-01-01T22:00:00+00:00",
        updated_at="2026-01-02T00:00:00+00:00", status="finished", baseline_commit="0000001" * 2,
        config={"budget": 300, "hours": 8, "max_trials": 12, "max_cost": 20.0, "agent": "claude",
                "model": "claude-sonnet-4-5", "device": "cuda", "dataset": "climbmix"},
        best={"trial": 11, "commit": "000000c" * 2, "val_bpb": 0.98},
        noise_floor={"seeds": [1, 2, 3], "val_bpbs": [1.0, 1.0012, 0.9991], "std": 0.0012,
                     "keep_threshold": 0.0024},
        stop_reason="max trials reached")
    _write_rows(run_dir, NIGHT, day="2026-01-01")
    return run_dir


def write_running(runs_dir: Path, tag: str = "still-going") -> Path:
    """A run in progress: no holdout, no noise floor, one program.md, trial 4 without a record yet."""
    run_dir = runs_dir / tag
    write_run_json(
        run_dir, tag=tag, branch=f"autoresearch/{tag}", project_dir="/nonexistent/project",
        worktree=None, created_at="2026-01-03T22:00:00+00:00", updated_at="2026-01-03T22:30:00+00:00",
        status="running", baseline_commit="0000001" * 2,
        config={"budget": 300, "agent": "scripted", "device": "cpu", "dataset": "tiny"},
        best={"trial": 2, "commit": "0000003" * 2, "val_bpb": 2.40}, noise_floor=None, stop_reason=None)
    _write_rows(run_dir, [
        (0, "keep", "baseline", 2.500000, None, PROGRAM_A, None),
        (1, "discard", "smaller learning rate", 2.510000, None, PROGRAM_A, None),
        (2, "keep", "bigger batch", 2.400000, None, PROGRAM_A, None),
        (3, "crash", "flash attention", None, None, PROGRAM_A, "ImportError: no module named flash_attn"),
    ], day="2026-01-03")
    (run_dir / "trial-0004").mkdir()  # the loop is training trial 4 right now
    (run_dir / "trial-0004" / "train.py").write_text("# being trained\n")
    return run_dir


REFERENCE_TSV = """commit\tval_bpb\tmemory_gb\tstatus\tdescription
a1b2c3d\t0.997900\t44.0\tkeep\tbaseline
b2c3d4e\t0.993200\t44.2\tkeep\tincrease LR to 0.04
c3d4e5f\t1.005000\t44.0\tdiscard\tswitch to GeLU activation
d4e5f6g\t0.000000\t0.0\tcrash\tdouble model width (OOM)
e5f6a7b\t0.990100\t44.9\tkeep\tadd value embeddings
"""


def write_reference_tsv(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "results.tsv"
    path.write_text(REFERENCE_TSV)
    return path
