"""Run a command so that none of its descendants outlives it: `python supervise.py COMMAND [ARGS...]`.

The runner starts training (and evaluate.py the evaluator) through this small supervisor, by file
path and with the standard library only, so that nothing in a worktree can shadow it. It makes
itself a *child subreaper* (prctl PR_SET_CHILD_SUBREAPER, Linux >= 3.4): every process its
command starts that loses its parent — a daemon that double-forks, a `setsid` child, a process
that left the process group — is re-parented to the supervisor instead of to init, so that all
of them stay its descendants in /proc. It starts COMMAND, reaps whatever exits, and when COMMAND
ends (or is stopped) it SIGKILLs every remaining descendant, reaps them, and exits with COMMAND's
status (a signal death is repeated on itself, so the caller sees the same return code).

Signals: SIGTERM, SIGINT or SIGHUP (the runner's stop, sent to the process group) are passed on to
COMMAND, which gets $AUTORESEARCH_KILL_GRACE seconds (default 5) to exit before the sweep; SIGUSR1
sweeps at once. The supervisor asks the kernel for SIGUSR1 when the harness dies (PR_SET_PDEATHSIG),
so a killed harness leaves nothing running either. COMMAND gets $AUTORESEARCH_HARNESS_PID set to
the supervisor's pid, so launch.py's own death signal ties it to the supervisor.

What this does not protect against: a process in uninterruptible sleep (D state, say on a GPU
driver) cannot be killed by anyone; after SWEEP_SECONDS the supervisor reports such pids on
stderr and exits anyway. A process that kills or stops the supervisor itself escapes the sweep
(under Landlock ABI >= 6 the sandbox forbids signalling it). Without /proc (not Linux) there is no
sweep: only the process group is cleaned, by the runner.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

ENV_HARNESS_PID = "AUTORESEARCH_HARNESS_PID"
ENV_KILL_GRACE = "AUTORESEARCH_KILL_GRACE"
SWEEP_SECONDS = 10.0  # how long the sweep keeps trying before it reports survivors
POLL_SECONDS = 0.02
SWEPT_PREFIX = "[supervise] killed"  # the line that lists what the sweep killed (the runner reads it)
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36


# --- The process tree (pure functions over /proc) -------------------------------------------------


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process in /proc; {} where /proc is absent."""
    table: dict[int, tuple[int, str]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                text = handle.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()  # comm may hold spaces and parentheses
        if len(fields) >= 2 and fields[1].isdigit():
            table[int(name)] = (int(fields[1]), fields[0])
    return table


def descendants(table: dict[int, tuple[int, str]], root: int, *, live_only: bool = True) -> set[int]:
    """Every process below `root` in `table` (children, their children, ...); zombies left out by default."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid in found or pid == root:
            continue
        found.add(pid)
        todo.extend(children.get(pid, []))
    if live_only:
        found = {pid for pid in found if table[pid][1] != "Z"}
    return found


# --- The supervisor -------------------------------------------------------------------------------


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Supervisor:
    def __init__(self, command: list[str], grace: float):
        self.command = command
        self.grace = grace
        self.child = 0
        self.statuses: dict[int, int] = {}
        self.stop_at: float | None = None
        self.sweep_now = False
        self.killed: set[int] = set()  # processes the sweep killed (the command's own pid left out)

    def _on_stop(self, signum: int, frame: object) -> None:
        if self.stop_at is None:
            self.stop_at = time.monotonic()
        if self.child and self.child not in self.statuses:
            with contextlib.suppress(OSError):
                os.kill(self.child, signal.SIGTERM)

    def _on_sweep(self, signum: int, frame: object) -> None:
        self.sweep_now = True

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            self.statuses[pid] = status

    def sweep(self) -> list[int]:
        """SIGKILL every descendant until none is left; the pids that would not die after SWEEP_SECONDS."""
        deadline = time.monotonic() + SWEEP_SECONDS
        while True:
            self.reap()
            left = descendants(process_table(), os.getpid())
            if not left:
                self.reap()
                return []
            if time.monotonic() > deadline:
                return sorted(left)
            self.killed |= left - {self.child}
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(POLL_SECONDS / 2)

    def run(self) -> int | None:
        """Run the command and sweep; its wait status (None if it could not be started)."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_stop)
        signal.signal(signal.SIGUSR1, self._on_sweep)
        env = {**os.environ, ENV_HARNESS_PID: str(os.getpid())}
        try:
            self.child = os.fork()
        except OSError as error:
            sys.stderr.write(f"supervise: cannot start {self.command[0]}: {error}\n")
            return None
        if self.child == 0:
            try:
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                    signal.signal(signum, signal.SIG_DFL)
                os.execvpe(self.command[0], self.command, env)
            except BaseException as error:  # noqa: BLE001 - nothing may run on in the forked copy
                os.write(2, f"supervise: cannot run {self.command[0]}: {error}\n".encode())
            os._exit(127)
        while self.child not in self.statuses:
            self.reap()
            if self.sweep_now or (self.stop_at is not None and time.monotonic() - self.stop_at > self.grace):
                break
            time.sleep(POLL_SECONDS)
        survivors = self.sweep()
        if self.killed:
            sys.stderr.write(f"{SWEPT_PREFIX} {len(self.killed)} process(es) left behind: "
                             f"{' '.join(map(str, sorted(self.killed)))}\n")
        if survivors:
            sys.stderr.write(f"supervise: process(es) {', '.join(map(str, survivors))} would not die "
                             f"within {SWEEP_SECONDS:g} s (uninterruptible sleep?); leaving them\n")
        return self.statuses.get(self.child)


def _exit_like(status: int | None) -> None:
    if status is None:
        os._exit(127)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset
            signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        os._exit(128 + number)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def main(argv: list[str] | None = None) -> None:
    command = list(sys.argv[1:] if argv is None else argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        sys.stderr.write("usage: python supervise.py COMMAND [ARGS...]\n")
        os._exit(2)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    harness = os.environ.get(ENV_HARNESS_PID, "")
    if harness.isdigit():
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGUSR1))
        if os.getppid() != int(harness):  # the harness died before the request took effect
            os._exit(1)
    try:
        grace = float(os.environ.get(ENV_KILL_GRACE) or 5.0)
    except ValueError:
        grace = 5.0
    sys.stdout.flush()
    _exit_like(Supervisor(command, grace).run())


if __name__ == "__main__":
    main()
