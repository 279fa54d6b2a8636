"""Start `train.py` sandboxed and guarded: `python -m autoresearch.launch train.py [args...]`.

The runner starts training through this wrapper (under supervise.py), by its file path
(`python .../launch.py train.py`, the same thing) so that a worktree which itself contains an
`autoresearch/` directory cannot shadow the installed harness. Before running train.py as
`__main__` (with runpy, from train.py's own directory, as `python train.py` would), it applies
the sandbox the harness put in $AUTORESEARCH_SANDBOX (sandbox.py: Landlock, which binds this
process and every process it starts, whatever route they take to a file), then installs an audit hook
(`sys.addaudithook`, PEP 578) that watches the process. $AUTORESEARCH_PROTECTED_PATHS lists the
dataset's validation and holdout files (joined with os.pathsep; an entry ending in `*` is a name
prefix, used for the evaluator's cache of packed validation rows, `eval-rows-*`). The process
ends at once, with exit code `INTEGRITY_EXIT_CODE` and the line `integrity: training opened
validation data <path>` on stderr, when it:

- opens a protected file by any Python route: `open`, `io.open`, `os.open`, `pathlib`,
  `np.memmap`, `np.load`/`np.fromfile`, `mmap` (which needs a descriptor from one of those) —
  all raise the audit event "open"; paths are resolved, so a symbolic link to the file counts;
- links, renames or copies one (`os.link`, `os.symlink`, `os.rename`/`os.replace`,
  `shutil.copyfile`), so that it cannot be read later under another name;
- starts a program whose command line names one (`subprocess`, `os.system`, `os.exec*`,
  `os.posix_spawn`, `os.spawn*`), say `cp val.bin /tmp/x`.

`os._exit` is used so that no `try/except` in train.py can swallow it. The evaluator installs
the same hook (with its own message) before it imports train.py.

Under Landlock the hook is a second line that gives the clearest reason for Python-level
attempts; the kernel is what stops the rest. Where Landlock is unavailable (mode `audit-hook`),
the hook alone stands, and what it does not protect against is: code that opens files without
going through Python (C extensions or ctypes calling libc directly), what child processes do (the
hook lives in this interpreter only; only their command lines are checked), a hard link or copy
made before the run or by another program, a command line that builds the name inside a shell
(`cat v"al.bin"`), or reaching the data over the network. It is a tripwire for honest mistakes and
casual cheating, not a sandbox.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
from collections.abc import Callable
from pathlib import Path

from autoresearch.sandbox import apply_from_environment as apply_sandbox  # noqa: F401 - scoring.py calls it too

ENV_PROTECTED_PATHS = "AUTORESEARCH_PROTECTED_PATHS"
ENV_HARNESS_PID = "AUTORESEARCH_HARNESS_PID"  # the runner's pid: training dies with it (Linux)
INTEGRITY_EXIT_CODE = 86
INTEGRITY_MESSAGE = "integrity: training opened validation data"


def _normalise(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


# Audit events that name files: event -> the positions of the path arguments in its args tuple.
_PATH_EVENTS = {"open": (0,), "os.link": (0, 1), "os.symlink": (0, 1), "os.rename": (0, 1),
                "shutil.copyfile": (0, 1)}
# Audit events that start programs: their command lines are searched for a protected file's name.
_COMMAND_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn")


def _strings(value: object) -> list[str]:
    """Every str/bytes/path inside an audit event's argument (commands are lists of them)."""
    if isinstance(value, (str, bytes, os.PathLike)):
        try:
            return [os.fsdecode(value)]
        except (TypeError, ValueError):
            return []
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in _strings(item)]
    return []


def install_guard(protected: list[str], *, message: str = INTEGRITY_MESSAGE,
                  on_violation: Callable[[str], None] | None = None) -> None:
    """End the process when any of `protected` is opened, linked, copied or named in a command.

    An entry ending in `*` protects every file whose resolved path starts with the rest. The
    line `<message> <path>` (plus ` (by os.link)` and the like for what is not an open) goes to stderr; `on_violation(line)` runs first (the
    evaluator writes its verdict there), then `os._exit(INTEGRITY_EXIT_CODE)`.
    """
    exact = frozenset(_normalise(path) for path in protected if path and not path.endswith("*"))
    prefixes = tuple(_normalise(path[:-1]) for path in protected if path and path.endswith("*"))
    if not exact and not prefixes:
        return
    exact_names = frozenset(os.path.basename(path) for path in exact)
    prefix_names = tuple(os.path.basename(prefix) for prefix in prefixes)
    words = tuple(exact_names) + prefix_names  # what a command line naming one would contain

    def violation(path: str, how: str) -> None:
        line = f"{message} {path}" if how == "open" else f"{message} {path} (by {how})"
        if on_violation is not None:
            with contextlib.suppress(BaseException):  # the exit below must happen whatever this does
                on_violation(line)
        os.write(2, f"\n{line}\n".encode())
        os._exit(INTEGRITY_EXIT_CODE)

    def check_path(target: object, how: str) -> None:
        if isinstance(target, int) or target is None:
            return  # an already-open descriptor
        try:
            name = os.fsdecode(target)
        except (TypeError, ValueError):
            return
        base = os.path.basename(name)
        if base not in exact_names and not base.startswith(prefix_names) and not os.path.islink(name):
            return  # cheap test first: most opens are of other files
        resolved = _normalise(name)
        if resolved in exact or (prefixes and resolved.startswith(prefixes)):
            violation(resolved, how)

    def hook(event: str, args: tuple) -> None:
        positions = _PATH_EVENTS.get(event)
        if positions is not None:
            for position in positions:
                if position < len(args):
                    check_path(args[position], event)
            return
        if event in _COMMAND_EVENTS:
            for text in _strings(args):
                for word in words:
                    if word and word in text:
                        violation(word, f"{event} {text[:200]}")

    sys.addaudithook(hook)


def die_with_harness() -> None:
    """On Linux, ask for SIGKILL when the harness dies (say, SIGKILLed): no training outlives it.

    Only this process gets the signal; under supervise.py, $AUTORESEARCH_HARNESS_PID names the
    supervisor, which sweeps every other process of the trial.
    """
    parent = os.environ.get(ENV_HARNESS_PID, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the harness died before the request took effect
        os._exit(1)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.stderr.write("usage: python -m autoresearch.launch train.py [args...]\n")
        raise SystemExit(2)
    script = Path(argv[0]).resolve()
    die_with_harness()
    apply_sandbox()  # ends the process (exit 2, one line) if the policy cannot be applied
    install_guard(os.environ.get(ENV_PROTECTED_PATHS, "").split(os.pathsep))
    sys.argv = [str(script), *argv[1:]]
    sys.path[0] = str(script.parent)  # `import prepare` finds the worktree's prepare.py
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
