"""Fingerprints of what a trial must not change, taken before and compared after every trial.

Guarded: the worktree's `prepare.py`, `program.md` and `train.py` (the committed trial), the
files of the `autoresearch` package itself (the evaluator lives there), and the prepared dataset.
Small files are hashed with sha256. The dataset's token files can be gigabytes, and hashing them
twice a trial would cost more than the harness's whole overhead budget, so they are fingerprinted
by (size, modification time in ns) and only the manifest, the tokenizer and token_bytes.npy are
hashed (the manifest holds the full hashes that `autoresearch prepare` computed once). The
evaluator's cache of packed validation rows (`eval-rows-*.npy` in the dataset directory) is
watched across training, so train.py cannot plant or alter it.

What this does not protect against: a change that restores size and mtime (os.utime) to a token
file, a change made and undone within one trial, changes to files outside these lists (the user's
own checkout, other Python packages, torch), or reading something it should not (sandbox.py and
launch.py are for that; under Landlock the worktree and the dataset are read-only to the trial).
Worktree files are restored from git by the loop; a changed package or dataset cannot be restored
from here, so the loop stops the run instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import autoresearch
from autoresearch.contract import SPLITS

WORKTREE_FILES = ("prepare.py", "program.md", "train.py")
_HASHED_DATASET_FILES = ("manifest.json", "tokenizer.json", "token_bytes.npy")
EVAL_CACHE_GLOB = "eval-rows-*.npy"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _fingerprint(path: Path, hashed: bool) -> str:
    try:
        if hashed:
            return sha256_file(path)
        stat = path.stat()
        return f"size={stat.st_size} mtime_ns={stat.st_mtime_ns}"
    except FileNotFoundError:
        return "missing"


@dataclass(frozen=True)
class Change:
    kind: str  # "worktree", "package" or "dataset"
    path: Path
    name: str  # how a person would name it: "prepare.py", "autoresearch/evaluate.py", "val.bin"

    @property
    def restorable(self) -> bool:
        return self.kind == "worktree"


class Guard:
    """Knows which files to fingerprint for one run; `snapshot()` then `changes(before)`."""

    def __init__(self, worktree: Path, data_dir: Path, package_dir: Path | None = None,
                 guard_package: bool = True):
        self.worktree = Path(worktree)
        self.data_dir = Path(data_dir)
        self.package_dir = Path(package_dir or Path(autoresearch.__file__).parent)
        self.guard_package = guard_package

    def _files(self, eval_cache: bool = True) -> dict[Path, tuple[str, str, bool]]:
        files: dict[Path, tuple[str, str, bool]] = {}
        for name in WORKTREE_FILES:
            files[self.worktree / name] = ("worktree", name, True)
        for path in sorted(self.package_dir.rglob("*.py")) if self.guard_package else []:
            if "__pycache__" not in path.parts:
                files[path] = ("package", f"autoresearch/{path.relative_to(self.package_dir).as_posix()}", True)
        names = [*_HASHED_DATASET_FILES, *(f"{split}{suffix}" for split in SPLITS for suffix in (".bin", ".docs.npy"))]
        for name in names:
            files[self.data_dir / name] = ("dataset", name, name in _HASHED_DATASET_FILES)
        if eval_cache and self.data_dir.is_dir():
            # The evaluator caches its packed rows here; training must not plant or alter them.
            for path in sorted(self.data_dir.glob(EVAL_CACHE_GLOB)):
                files[path] = ("dataset", path.name, False)
        return files

    def snapshot(self) -> dict[Path, str]:
        return {path: _fingerprint(path, hashed) for path, (_, _, hashed) in self._files().items()}

    def changes(self, before: dict[Path, str], *, eval_cache: bool = True) -> list[Change]:
        """What differs from `before` now (modified, deleted or new files), worktree files first.

        `eval_cache=False` leaves out the evaluator's row cache (after an evaluation wrote it).
        """
        files = self._files(eval_cache)
        now = {path: _fingerprint(path, hashed) for path, (_, _, hashed) in files.items()}
        compared = set(now) | (set(before) if eval_cache else set(before) & set(files))
        found = []
        for path in sorted(compared):
            if before.get(path, "missing") != now.get(path, "missing"):
                kind, name, _ = files.get(path) or self._describe(path)
                found.append(Change(kind, path, name))
        order = {"worktree": 0, "dataset": 1, "package": 2}
        return sorted(found, key=lambda change: (order[change.kind], change.name))

    def _describe(self, path: Path) -> tuple[str, str, bool]:
        if path.parent == self.worktree:
            return ("worktree", path.name, True)
        if self.package_dir in path.parents:
            return ("package", f"autoresearch/{path.relative_to(self.package_dir).as_posix()}", True)
        return ("dataset", path.name, False)


def describe(changes: list[Change]) -> str:
    """One line for the record and the agent: `integrity: train.py modified prepare.py, val.bin`."""
    return "integrity: train.py modified " + ", ".join(change.name for change in changes)
