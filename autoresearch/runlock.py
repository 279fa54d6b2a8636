"""The run's lock: `runs/<tag>/lock`, a pid file that lets one process at a time write a run's records.

The loop holds it for the whole night; `autoresearch eval <tag>` (holdout.py) takes it while it
rewrites trials.jsonl. A lock whose process is gone is stale and is taken over. What this does
NOT protect against: a reused pid (a lock left by a dead run whose pid now belongs to another
process reads as held; the error names the lock file to delete), two machines sharing the runs
directory over a network file system (pids of another host mean nothing here), or a writer that
ignores the lock (report.py reads without it, by design).
"""

from __future__ import annotations

import os
from pathlib import Path

from autoresearch.errors import UserError
from autoresearch.runner import pid_alive

LOCK_FILE = "lock"


def acquire_run_lock(run_dir: Path) -> None:
    """Take `runs/<tag>/lock` (a pid file) or raise a UserError naming the process that holds it."""
    lock = Path(run_dir) / LOCK_FILE
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                holder = 0
            if holder and holder != os.getpid() and pid_alive(holder):
                raise UserError(f"another autoresearch run (pid {holder}) is using {run_dir}; "
                                f"stop it first, or delete {lock} if that process is not autoresearch") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        return
    raise UserError(f"could not take the lock {lock}; delete it if no run is active")


def release_run_lock(run_dir: Path) -> None:
    """Remove the lock if this process holds it; a lock of another process is left alone."""
    lock = Path(run_dir) / LOCK_FILE
    try:
        if int(lock.read_text().strip() or 0) == os.getpid():
            lock.unlink()
    except (OSError, ValueError):
        pass
