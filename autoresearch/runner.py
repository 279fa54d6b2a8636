"""Run one trial's training: `python -m autoresearch.launch train.py` in its own process group.

The harness owns the clock. Training runs in a new session (so it and everything it starts form
one process group), writes stdout and stderr to the trial's log file (never to a pipe that could
fill up), and is watched by polling: the log is tailed for progress lines (reported live through a
callback), and at `wall_limit` seconds (the budget plus a start-up allowance) or on a stop request
the whole group gets SIGTERM, then SIGKILL after a grace period. Even a training that exits on its
own has any leftover processes in its group killed. What train.py prints (`val_bpb`,
`training_seconds`, ...) is kept as claims; only the harness's own timing counts.

What this does not protect against: a grandchild that leaves the process group (setsid/setpgid)
before the kill, a training that fills the disk faster than the log cap is checked (every poll), or
GPU memory held by processes outside the group. On CUDA, `wait_for_gpu_release` waits (bounded)
until nvidia-smi no longer lists the group's processes, so the next trial starts on an empty GPU;
when nvidia-smi shows other PIDs (a container's PID namespace) it cannot tell and returns early.
`pid_alive` (a pid exists and is not a zombie) serves the run lock and the dataset builder; it
cannot tell a recycled pid from the process that first held it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch import launch
from autoresearch.contract import PROGRESS_PATTERN
from autoresearch.launch import INTEGRITY_EXIT_CODE, INTEGRITY_MESSAGE

OK, CRASH, TIMEOUT, INTEGRITY, INTERRUPTED = "ok", "crash", "timeout", "integrity", "interrupted"
LOG_LIMIT_BYTES = 256 * 1024 * 1024  # a training that prints more than this is stopped as a crash
TAIL_LINES = 50

_PROGRESS = re.compile(PROGRESS_PATTERN)
_SUMMARY_LINE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*):\s+(?P<value>\S.*?)\s*$")


@dataclass
class Progress:
    step: int
    percent: float
    loss: float
    remaining: float  # what train.py said
    elapsed: float  # the harness's clock since start


@dataclass
class TrainingResult:
    status: str  # ok | crash | timeout | integrity | interrupted
    seconds: float  # the harness's wall clock around the process
    returncode: int | None
    reason: str | None = None  # in words, for the record (None when ok)
    summary: dict[str, str] = field(default_factory=dict)  # the `---` block train.py printed (claims)
    last_progress: Progress | None = None
    pids: set[int] = field(default_factory=set)  # processes seen in the group (for the GPU wait)


class LogFollower:
    """Reads a growing log file incrementally; hands out complete lines (\\n or \\r terminated)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.pending = b""

    def read_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read(1 << 20)
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        data = self.pending + chunk
        parts = re.split(rb"[\r\n]", data)
        self.pending = parts.pop()
        return [part.decode("utf-8", errors="replace") for part in parts if part]

    def flush(self) -> list[str]:
        lines = self.read_lines()
        if self.pending:
            lines.append(self.pending.decode("utf-8", errors="replace"))
            self.pending = b""
        return lines


class OutputParser:
    """Progress lines and the final `---` summary from what train.py prints."""

    def __init__(self) -> None:
        self.summary: dict[str, str] = {}
        self.in_summary = False
        self.last_progress: Progress | None = None

    def feed(self, line: str, elapsed: float) -> Progress | None:
        stripped = line.strip()
        if stripped == "---":
            self.in_summary, self.summary = True, {}
            return None
        match = _PROGRESS.search(line)
        if match:
            self.in_summary = False
            try:
                progress = Progress(int(match["step"]), float(match["percent"]), float(match["loss"]),
                                    float(match["remaining"]), elapsed)
            except ValueError:
                return None
            self.last_progress = progress
            return progress
        if self.in_summary:
            summary = _SUMMARY_LINE.match(stripped)
            if summary:
                self.summary[summary["key"]] = summary["value"]
        return None


# --- Processes ---------------------------------------------------------------------------------


def _stat_fields(process_dir: str) -> list[str] | None:
    """The fields of `<process_dir>/stat` after `(comm)` (state, ppid, pgrp, ...); None if unreadable."""
    try:
        stat = Path(process_dir, "stat").read_text()
    except OSError:
        return None
    # pid (comm) state ppid pgrp ...; comm may hold spaces or parentheses
    return stat[stat.rfind(")") + 2 :].split()


def _live_processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, stat fields) of every process in /proc that is not a zombie; nothing where /proc is absent."""
    if not Path("/proc/self/stat").exists():
        return
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(entry.path)
            if fields is not None and len(fields) >= 3 and fields[0] != "Z":
                yield int(entry.name), fields


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie; another user's process counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(f"/proc/{pid}")
    return not fields or fields[0] != "Z"


def _group_members(pgid: int) -> set[int] | None:
    """Live (non-zombie) processes of a process group, from /proc; None where /proc is absent."""
    if not Path("/proc/self/stat").exists():
        return None
    return {pid for pid, fields in _live_processes() if int(fields[2]) == pgid}


def group_alive(pgid: int) -> bool:
    members = _group_members(pgid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _wait_until_gone(pgid: int, seconds: float, process: subprocess.Popen | None) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if process is not None:
            process.poll()  # reap the leader so it does not linger as a zombie
        if not group_alive(pgid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def kill_group(pgid: int, grace: float, process: subprocess.Popen | None = None) -> None:
    """SIGTERM the whole group, wait up to `grace` seconds, then SIGKILL what is left; reap the leader."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        if _wait_until_gone(pgid, wait, process):
            break
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5.0)


def kill_stale_group(pgid: int, grace: float = 2.0) -> bool:
    """Kill a training group left by a harness that died (its pgid recorded on disk); True if any."""
    members = _group_members(pgid)
    if members is None:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
    elif not members:
        return False
    kill_group(pgid, grace)
    return True


def kill_child_groups(grace: float = 2.0) -> None:
    """Kill the process groups of this process's children that run in sessions of their own.

    Used when the loop abandons a step (Ctrl-C during evaluation): a subprocess started with
    start_new_session does not get the terminal's SIGINT and would otherwise outlive us.
    """
    me, my_group = os.getpid(), os.getpgrp()
    for _, fields in _live_processes():
        if int(fields[1]) == me and int(fields[2]) != my_group:
            kill_group(int(fields[2]), grace)


def log_tail(path: Path, lines: int = TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    """The last `lines` lines of a log (read from its end, so a huge log costs nothing)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def crash_reason(tail: str, returncode: int | None) -> str:
    """One line saying why training failed: the exception line of a traceback, or the exit status."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
        for line in reversed(lines):
            if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)?(:|$)", line) and \
                    not line.startswith(("File ", "Traceback")):
                return line[:300]
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"train.py was killed by {name}"
    return f"train.py exited with status {returncode}" + (f": {lines[-1][:200]}" if lines else "")


# --- Training ----------------------------------------------------------------------------------


def run_training(train_py: Path, *, env: Mapping[str, str], log_path: Path, wall_limit: float,
                 on_progress: Callable[[Progress], None] | None = None,
                 on_start: Callable[[int], None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False,
                 kill_grace: float = 5.0, poll_interval: float = 0.1,
                 log_limit_bytes: int = LOG_LIMIT_BYTES) -> TrainingResult:
    """Train `train_py` (in its own directory) under the harness's clock and return what happened."""
    train_py = Path(train_py)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    follower, parser = LogFollower(log_path), OutputParser()
    pids: set[int] = set()
    with open(log_path, "wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, launch.__file__, str(train_py)],
            cwd=train_py.parent, env={**env, launch.ENV_HARNESS_PID: str(os.getpid())},
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    pgid = process.pid
    pids.add(process.pid)
    if on_start is not None:
        on_start(pgid)
    status, reason = None, None
    try:
        while True:
            returncode = process.poll()
            elapsed = time.monotonic() - started
            for line in follower.read_lines():
                progress = parser.feed(line, elapsed)
                if progress is not None and on_progress is not None:
                    on_progress(progress)
            if returncode is not None:
                break
            if elapsed > wall_limit:
                status = TIMEOUT
                reason = f"training ran past {wall_limit:.0f} s (budget plus start-up allowance); killed"
                break
            if should_stop():
                status, reason = INTERRUPTED, "stopped by the user during training"
                break
            if follower.offset > log_limit_bytes:
                status, reason = CRASH, f"train.py wrote more than {log_limit_bytes >> 20} MB of output; killed"
                break
            time.sleep(poll_interval)
    finally:
        pids |= _group_members(pgid) or set()
        if process.poll() is None or group_alive(pgid):
            kill_group(pgid, kill_grace, process)
        process.wait()
    seconds = time.monotonic() - started
    for line in follower.flush():
        parser.feed(line, seconds)
    returncode = process.returncode
    if status is None:
        if returncode == 0:
            status = OK
        elif returncode == INTEGRITY_EXIT_CODE and INTEGRITY_MESSAGE in log_tail(log_path, 5):
            status = INTEGRITY
            tail = log_tail(log_path, 5).splitlines()
            reason = next(line for line in reversed(tail) if INTEGRITY_MESSAGE in line)
        else:
            status, reason = CRASH, crash_reason(log_tail(log_path), returncode)
    return TrainingResult(status, seconds, returncode, reason, parser.summary, parser.last_progress, pids)


def wait_for_gpu_release(pids: set[int], timeout: float = 30.0, poll_interval: float = 0.5) -> bool:
    """Wait until nvidia-smi lists none of `pids` as a compute process; True when released (or unknown)."""
    smi = shutil.which("nvidia-smi")
    if not smi or not pids:
        return True
    deadline = time.monotonic() + timeout
    while True:
        try:
            listing = subprocess.run([smi, "--query-compute-apps=pid", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return True
        listed = {int(line) for line in listing.split() if line.strip().isdigit()}
        if not (listed & pids):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_interval)


def float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
