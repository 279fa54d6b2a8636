"""Run one trial's training under the supervisor, in its own process group, on the harness's clock.

The harness owns the clock. Training runs as `python supervise.py python launch.py train.py` in a
new session: the supervisor (supervise.py) is a child subreaper, so every process training starts
stays its descendant — including one in a new session or another process group — and is SIGKILLed
when training ends; launch.py applies the sandbox (sandbox.py) and the audit hook, then runs
train.py. Output goes to the trial's log file (never to a pipe that could fill up), which is tailed
for progress lines (reported live through a callback), for the summary and for sandbox denials
("Permission denied" naming a watched file: the trial is stopped as an integrity violation). At
`wall_limit` seconds (the budget plus a start-up allowance) or on a stop request the group gets
SIGTERM; the supervisor gives training `kill_grace` seconds, sweeps, and exits; what is still
there after that gets SIGKILL. What train.py prints (`val_bpb`, `training_seconds`, ...) is kept
as claims; only the harness's own timing counts.

Every process the harness may kill later is identified, not just numbered: a `ProcessIdentity`
holds the pid, the process group, the start time from /proc/<pid>/stat, the boot id and a marker
($AUTORESEARCH_TRIAL_MARKER, unique to the run of one trial, in the environment of every process it
starts). `kill_recorded_training` (resume after a killed harness) kills only processes that still
match: the recorded leader with the same start time and marker, or any process carrying the marker.
Every wait is bounded: a process that does not die (uninterruptible sleep on a GPU) is reported in
the log and in `TrainingResult.unkilled`, and the loop goes on.

What this does not protect against: a descendant that escapes both the supervisor's sweep (by
killing or stopping the supervisor where the sandbox cannot forbid it) and the marker (by clearing
its environment) after the harness itself was SIGKILLed; a training that fills the disk faster than
the log cap is checked (every poll); GPU memory held by processes that were never descendants.
On CUDA, `wait_for_gpu_release` waits (bounded) until nvidia-smi no longer lists the trial's
processes; when nvidia-smi shows other PIDs (a container's PID namespace) it cannot tell and
returns early. `pid_alive` (a pid exists and is not a zombie) serves the run lock and the dataset
builder; it cannot tell a recycled pid from the process that first held it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autoresearch import launch, sandbox, supervise
from autoresearch.contract import PROGRESS_PATTERN
from autoresearch.launch import INTEGRITY_EXIT_CODE, INTEGRITY_MESSAGE

OK, CRASH, TIMEOUT, INTEGRITY, INTERRUPTED = "ok", "crash", "timeout", "integrity", "interrupted"
ENV_TRIAL_MARKER = "AUTORESEARCH_TRIAL_MARKER"  # unique to one trial's run, inherited by its processes
WAIT_SECONDS = 5.0  # the longest any wait for a killed process lasts
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
    pids: set[int] = field(default_factory=set)  # the trial's processes seen (for the GPU wait)
    isolation: str = sandbox.AUDIT_HOOK  # the sandbox in effect: "landlock-v7" or "audit-hook"
    unkilled: list[int] = field(default_factory=list)  # processes that would not die (D state): reported, not waited for


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


def wait_bounded(process: subprocess.Popen, seconds: float = WAIT_SECONDS) -> bool:
    """Wait for `process` to exit, at most `seconds`; False when it is still there (stuck in D state)."""
    try:
        process.wait(timeout=seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


def kill_group(pgid: int, grace: float, process: subprocess.Popen | None = None) -> list[int]:
    """SIGTERM a group we started, wait up to `grace` seconds, then SIGKILL what is left; reap the leader.

    Only for a group whose leader is our own unreaped child (`process`), or one verified by
    `ProcessIdentity.matches`: a group id cannot be reused while its leader is unreaped. Returns the
    members still alive after the SIGKILL and a bounded wait (none, unless one is stuck).
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, WAIT_SECONDS)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        except PermissionError:
            break
        if _wait_until_gone(pgid, wait, process):
            break
    if process is not None:
        wait_bounded(process)
    return sorted(_group_members(pgid) or ())


# --- Identities: kill only what is still ours -------------------------------------------------------


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, field 22 of /proc/<pid>/stat), or None."""
    fields = _stat_fields(f"/proc/{pid}")
    try:
        return int(fields[19]) if fields and len(fields) > 19 else None
    except ValueError:
        return None


def _environment(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None


def carries_marker(pid: int, marker: str) -> bool:
    """Whether the process was started with $AUTORESEARCH_TRIAL_MARKER = `marker` (its initial environment)."""
    environment = _environment(pid)
    if not environment or not marker:
        return False
    entry = f"{ENV_TRIAL_MARKER}={marker}".encode()
    return environment.startswith(entry + b"\0") or b"\0" + entry + b"\0" in environment \
        or environment == entry or environment.endswith(b"\0" + entry)


def marked_processes(marker: str) -> set[int]:
    """Every live process started with this trial's marker in its environment (wherever it went)."""
    me = os.getpid()
    return {pid for pid, _ in _live_processes() if pid != me and carries_marker(pid, marker)}


@dataclass(frozen=True)
class ProcessIdentity:
    """Who a recorded process is: a pid alone can be recycled (after it exits, after a reboot)."""

    pid: int
    pgid: int
    start_time: int | None
    boot_id: str
    marker: str

    @classmethod
    def of(cls, pid: int, marker: str) -> ProcessIdentity:
        return cls(pid, pid, start_time(pid), _boot_id(), marker)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ProcessIdentity:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an identity")
        return cls(int(data["pid"]), int(data["pgid"]), data.get("start_time"), str(data.get("boot_id", "")),
                   str(data["marker"]))

    def matches(self) -> bool:
        """The same process still runs: same boot, same start time, and started with our marker."""
        if not self.marker or self.start_time is None or self.boot_id != _boot_id():
            return False
        return start_time(self.pid) == self.start_time and carries_marker(self.pid, self.marker)


def kill_identified(identity: ProcessIdentity, grace: float = 2.0) -> list[int]:
    """Kill what is still ours of a recorded training: its group if the leader matches, and every marked process.

    Returns the pids it signalled (empty when nothing matched: then nothing was killed).
    """
    targets = marked_processes(identity.marker)
    if identity.matches():
        targets |= _group_members(identity.pgid) or {identity.pid}
        with contextlib.suppress(OSError):
            os.kill(identity.pid, signal.SIGUSR1)  # the supervisor: sweep at once
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, WAIT_SECONDS)):
        alive = {pid for pid in targets if pid_alive(pid)}
        if not alive:
            break
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(pid_alive(pid) for pid in alive):
            time.sleep(0.02)
    return sorted(targets)


def kill_now(identity: ProcessIdentity | None) -> None:
    """The harness is leaving at once (second Ctrl-C): SIGKILL a matching training's group, bar its supervisor.

    The supervisor is told to sweep (SIGUSR1) instead of being killed, so that it also ends the
    processes that left the group; it gets the same signal again when the harness is gone.
    """
    if identity is None or not identity.matches():
        return
    with contextlib.suppress(OSError):
        os.kill(identity.pid, signal.SIGUSR1)
    for pid in (_group_members(identity.pgid) or set()) - {identity.pid}:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def kill_recorded_training(path: Path, grace: float = 2.0) -> str | None:
    """Resume: kill the training a dead harness recorded in `path` if it is still ours; a note, or None.

    The file holds a `ProcessIdentity` (JSON). A bare number (an older version) or anything else
    identifies nothing and kills nothing. The file is removed either way.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"could not read {path.name} ({error}); killed nothing"
    finally:
        path.unlink(missing_ok=True)
    try:
        identity = ProcessIdentity.from_json(text)
    except (ValueError, KeyError, TypeError):
        return f"{path.name} holds no process identity ({text.strip()[:40]!r}); killed nothing"
    killed = kill_identified(identity, grace)
    if not killed:
        return None
    return (f"killed {len(killed)} process(es) left running by the previous session's training "
            f"(pid {', '.join(map(str, killed))})")


def kill_child_groups(grace: float = 2.0) -> None:
    """Kill the process groups of this process's children that run in sessions of their own.

    Used when the loop abandons a step (Ctrl-C during evaluation): a subprocess started with
    start_new_session does not get the terminal's SIGINT and would otherwise outlive us. Each is
    our own child (its parent pid is ours), so its group is ours. A supervisor (training, the
    evaluator) is told to sweep at once instead of being killed with its group.
    """
    me, my_group = os.getpid(), os.getpgrp()
    for pid, fields in _live_processes():
        if int(fields[1]) == me and int(fields[2]) != my_group:
            if _is_supervisor(pid):  # it sweeps what left the group; killing it would lose them
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGUSR1)
                for member in (_group_members(int(fields[2])) or set()) - {pid}:
                    with contextlib.suppress(OSError):
                        os.kill(member, signal.SIGKILL)
            else:
                kill_group(int(fields[2]), grace)


def _is_supervisor(pid: int) -> bool:
    """Whether our child `pid` runs supervise.py (its command line names the file)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return len(argv) > 1 and os.fsdecode(argv[1]) == supervise.__file__


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


def denial_reason(name: str, line: str, mode: str) -> str:
    """The record's reason for a trial the sandbox stopped: which file, and the line that showed it."""
    return f"integrity: the sandbox ({mode}) denied the trial access to {name}: {line.strip()[:200]}"


def swept_pids(line: str) -> set[int]:
    """The pids in supervise.py's line about the processes its sweep killed (none for any other line)."""
    if not line.startswith(supervise.SWEPT_PREFIX):
        return set()
    _, _, listed = line.partition(":")
    return {int(word) for word in listed.split() if word.isdigit()}


def training_command(train_py: Path) -> list[str]:
    """The supervisor, then the launcher, then train.py: each by file path (nothing can shadow them)."""
    return [sys.executable, supervise.__file__, sys.executable, launch.__file__, str(train_py)]


def run_training(train_py: Path, *, env: Mapping[str, str], log_path: Path, wall_limit: float,
                 on_progress: Callable[[Progress], None] | None = None,
                 on_start: Callable[[ProcessIdentity], None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False,
                 kill_grace: float = 5.0, poll_interval: float = 0.1,
                 log_limit_bytes: int = LOG_LIMIT_BYTES) -> TrainingResult:
    """Train `train_py` (in its own directory) under the harness's clock and return what happened.

    `env` is the child's whole environment (childenv.child_env builds it); a sandbox policy in it
    ($AUTORESEARCH_SANDBOX) is applied by launch.py. `on_start` gets the supervisor's identity,
    for a later session to kill what is left if this one dies.
    """
    train_py = Path(train_py)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    follower, parser = LogFollower(log_path), OutputParser()
    policy = sandbox.policy_from_env(dict(env))
    marker = env.get(ENV_TRIAL_MARKER) or uuid.uuid4().hex
    child_env = {**env, ENV_TRIAL_MARKER: marker, launch.ENV_HARNESS_PID: str(os.getpid()),
                 supervise.ENV_KILL_GRACE: f"{kill_grace:g}"}
    pids: set[int] = set()
    with open(log_path, "wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            training_command(train_py), cwd=train_py.parent, env=child_env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    pgid = process.pid
    pids.add(process.pid)
    identity = ProcessIdentity.of(process.pid, marker)
    if on_start is not None:
        on_start(identity)
    status, reason = None, None
    next_census = 0.0
    try:
        while True:
            returncode = process.poll()
            elapsed = time.monotonic() - started
            for line in follower.read_lines():
                pids |= swept_pids(line)
                progress = parser.feed(line, elapsed)
                if progress is not None and on_progress is not None:
                    on_progress(progress)
                denied = sandbox.denial_in_line(line, policy) if policy is not None else None
                if denied is not None and status is None:
                    status, reason = INTEGRITY, denial_reason(denied, line, policy.mode)
            if status is not None:
                break
            if returncode is not None:
                break
            if elapsed >= next_census:  # who belongs to the trial (the GPU wait needs every pid)
                pids |= supervise.descendants(supervise.process_table(), process.pid)
                next_census = elapsed + 0.5
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
        ended = time.monotonic()  # the clock stops when training ended or was stopped, not after the clean-up
    finally:
        pids |= supervise.descendants(supervise.process_table(), process.pid) | (_group_members(pgid) or set())
        unkilled = stop_supervised(process, pgid, marker, kill_grace)
    if unkilled:
        with open(log_path, "a") as log:
            log.write(f"\n[autoresearch] process(es) {', '.join(map(str, unkilled))} did not die after SIGKILL "
                      "(uninterruptible sleep?); going on without them\n")
    if policy is not None and policy.tmp_dir:
        shutil.rmtree(policy.tmp_dir, ignore_errors=True)
    seconds = ended - started
    for line in follower.flush():
        pids |= swept_pids(line)
        parser.feed(line, seconds)
        denied = sandbox.denial_in_line(line, policy) if policy is not None else None
        if denied is not None and status in (None, CRASH):
            status, reason = INTEGRITY, denial_reason(denied, line, policy.mode)
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
    isolation = policy.mode if policy is not None else sandbox.AUDIT_HOOK
    return TrainingResult(status, seconds, returncode, reason, parser.summary, parser.last_progress, pids,
                          isolation, unkilled)


def stop_supervised(process: subprocess.Popen, pgid: int, marker: str, grace: float) -> list[int]:
    """End a trial's processes, every wait bounded: the supervisor sweeps; the group and the marker catch the rest.

    Returns the pids still alive at the end (stuck in D state): reported, never waited for again.
    """
    if process.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGTERM)  # the supervisor passes it on, waits `grace`, then sweeps
        wait_bounded(process, grace + supervise.SWEEP_SECONDS + 1.0)
    left: list[int] = []
    if process.poll() is None or group_alive(pgid):
        left = kill_group(pgid, 0.0, process)
    marked = marked_processes(marker)  # escaped both (the supervisor was killed): identified by the marker
    for pid in marked:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + WAIT_SECONDS
    while marked and time.monotonic() < deadline:
        marked = {pid for pid in marked if pid_alive(pid)}
        time.sleep(0.02)
    if process.poll() is None:
        left.append(process.pid)
    return sorted(set(left) | marked)


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
