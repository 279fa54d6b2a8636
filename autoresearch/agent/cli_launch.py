"""Start an agent CLI sandboxed: `python .../autoresearch/agent/cli_launch.py COMMAND`.

The command agent (command.py) starts every agent command through this launcher, by its file path
(so that nothing the agent wrote into the worktree, its working directory, can shadow the harness's
modules), in a process group of its own. The launcher applies the policy the harness put in
$AUTORESEARCH_SANDBOX (sandbox.agent_policy: Landlock, which binds this process and everything it
starts), drops that variable, and replaces itself with `/bin/sh -c COMMAND`, so the process group,
its leader and the harness's time limit and kills are what they were without it. The restriction
is applied here, in a fresh single-threaded interpreter, rather than in a `preexec_fn` of the
harness: code between fork and exec in a child of a threaded parent may deadlock, and Landlock binds
only the thread that asks.

A policy that cannot be applied ends the launcher with one `error: isolation: ...` line and exit
code 2, so that no CLI runs with less isolation than the harness recorded. In `audit-hook` mode
(no Landlock) the policy only gives the CLI its private $TMPDIR.

What this does not protect against: whatever the policy allows (see sandbox.agent_policy); a
CLI gets no audit hook, so without Landlock nothing restricts its files.
"""

from __future__ import annotations

import os
import sys

from autoresearch.sandbox import ENV_POLICY, apply_from_environment

SHELL = "/bin/sh"
CANNOT_RUN_EXIT = 127


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        sys.stderr.write("usage: python cli_launch.py COMMAND (one shell command line)\n")
        raise SystemExit(2)
    apply_from_environment()  # ends the process (exit 2, one line) if the policy cannot be applied
    os.environ.pop(ENV_POLICY, None)
    sys.stdout.flush()
    try:
        os.execve(SHELL, [SHELL, "-c", argv[0]], dict(os.environ))
    except OSError as error:
        sys.stderr.write(f"error: cannot run {SHELL}: {error}\n")
        sys.stderr.flush()
        os._exit(CANNOT_RUN_EXIT)


if __name__ == "__main__":
    main()
