"""integrity.Guard: what a trial must not change is noticed, and named the way a person would name it."""

from __future__ import annotations

import os
from pathlib import Path

from autoresearch.integrity import Guard, describe


def layout(tmp_path: Path) -> Guard:
    worktree, data, package = tmp_path / "wt", tmp_path / "data", tmp_path / "pkg"
    for directory in (worktree, data, package / "agent"):
        directory.mkdir(parents=True)
    for name in ("prepare.py", "program.md", "train.py"):
        (worktree / name).write_text(f"{name}\n")
    for name in ("manifest.json", "tokenizer.json", "token_bytes.npy", "train.bin", "val.bin", "holdout.bin"):
        (data / name).write_bytes(b"x" * 8)
    (package / "evaluate.py").write_text("SCORE = 1\n")
    (package / "agent" / "offline.py").write_text("pass\n")
    return Guard(worktree, data, package_dir=package)


def test_an_untouched_trial_has_no_changes(tmp_path: Path) -> None:
    guard = layout(tmp_path)
    before = guard.snapshot()
    (guard.worktree / "checkpoint.pt").write_bytes(b"new files in the worktree are not guarded here")
    (guard.data_dir / "eval-rows-v1-abc-val-T64-N4096.npy").write_bytes(b"rows")
    assert guard.changes(before, eval_cache=False) == []


def test_each_kind_of_change_is_named(tmp_path: Path) -> None:
    guard = layout(tmp_path)
    before = guard.snapshot()
    (guard.worktree / "prepare.py").write_text("changed\n")
    (guard.package_dir / "agent" / "offline.py").write_text("changed\n")
    (guard.data_dir / "tokenizer.json").write_bytes(b"y" * 8)  # same size: caught by its hash
    stat = (guard.data_dir / "val.bin").stat()
    (guard.data_dir / "val.bin").write_bytes(b"z" * 9)  # big files: size and mtime
    os.utime(guard.data_dir / "val.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    changes = guard.changes(before)
    assert [(c.kind, c.name) for c in changes] == [("worktree", "prepare.py"), ("dataset", "tokenizer.json"),
                                                  ("dataset", "val.bin"), ("package", "autoresearch/agent/offline.py")]
    assert [c.restorable for c in changes] == [True, False, False, False]
    assert describe(changes[:1]) == "integrity: train.py modified prepare.py"


def test_a_planted_evaluator_cache_counts_during_training(tmp_path: Path) -> None:
    guard = layout(tmp_path)
    before = guard.snapshot()
    (guard.data_dir / "eval-rows-v1-abc-val-T64-N4096.npy").write_bytes(b"forged rows")
    assert [c.name for c in guard.changes(before)] == ["eval-rows-v1-abc-val-T64-N4096.npy"]


def test_the_package_can_be_left_out(tmp_path: Path) -> None:
    guard = layout(tmp_path)
    guard.guard_package = False
    before = guard.snapshot()
    (guard.package_dir / "evaluate.py").write_text("SCORE = 0\n")
    assert guard.changes(before) == []
