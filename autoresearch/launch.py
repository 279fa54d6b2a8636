"""Start `train.py` under a guard: `python -m autoresearch.launch train.py [args...]`.

The runner starts training through this wrapper, by its file path (`python .../launch.py
train.py`, the same thing) so that a worktree which itself contains an `autoresearch/` directory
cannot shadow the installed harness. Before running train.py as `__main__` (with
runpy, from train.py's own directory, as `python train.py` would), it installs an audit hook
(`sys.addaudithook`, PEP 578) that watches every file open in the process. Opening one of the
paths listed in $AUTORESEARCH_PROTECTED_PATHS (the dataset's validation and holdout files, joined
with os.pathsep) ends the process at once with exit code `INTEGRITY_EXIT_CODE` and the line
`integrity: training opened validation data <path>` on stderr. `os._exit` is used so that no
`try/except` in train.py can swallow it.

What this does not protect against: code that opens files without going through Python (C
extensions or ctypes calling libc directly), child processes train.py starts (the hook lives in
this interpreter only), reading the data through a copy made before the run, or reaching the data
over the network. It is a tripwire for honest mistakes and casual cheating, not a sandbox; the
harness's own evaluator and the holdout split are the real defence.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

ENV_PROTECTED_PATHS = "AUTORESEARCH_PROTECTED_PATHS"
ENV_HARNESS_PID = "AUTORESEARCH_HARNESS_PID"  # the runner's pid: training dies with it (Linux)
INTEGRITY_EXIT_CODE = 86
INTEGRITY_MESSAGE = "integrity: training opened validation data"


def _normalise(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def install_guard(protected: list[str]) -> None:
    """Abort the process when any of `protected` is opened (by path or by a path-like)."""
    guarded = frozenset(_normalise(path) for path in protected if path)
    if not guarded:
        return
    guarded_names = frozenset(os.path.basename(path) for path in guarded)

    def hook(event: str, args: tuple) -> None:
        if event != "open" or not args:
            return
        target = args[0]
        if isinstance(target, int) or target is None:
            return  # an already-open descriptor
        try:
            name = os.fsdecode(target)
        except (TypeError, ValueError):
            return
        if os.path.basename(name) not in guarded_names:
            return  # cheap test first: most opens are of other files
        if _normalise(name) in guarded:
            os.write(2, f"\n{INTEGRITY_MESSAGE} {_normalise(name)}\n".encode())
            os._exit(INTEGRITY_EXIT_CODE)

    sys.addaudithook(hook)


def die_with_harness() -> None:
    """On Linux, ask for SIGKILL when the harness dies (say, SIGKILLed): no training outlives it.

    Only this process gets the signal; processes it starts are killed on resume (the runner
    records the process group).
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
    install_guard(os.environ.get(ENV_PROTECTED_PATHS, "").split(os.pathsep))
    sys.argv = [str(script), *argv[1:]]
    sys.path[0] = str(script.parent)  # `import prepare` finds the worktree's prepare.py
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
