#!/usr/bin/env python3
"""A stand-in coding-agent CLI for the command agent's tests: what it does is its first argument.

    agent_standin.py edit OLD NEW   replace OLD with NEW in ./train.py, print a description
    agent_standin.py other          edit ./prepare.py instead (the harness must reject it)
    agent_standin.py hang           start a child (its pid on stdout), then sleep (the harness must kill
                                    both at its limit)
    agent_standin.py commit         edit train.py and `git commit` it (the harness must refuse)
    agent_standin.py fail           print to stderr and exit 3
    agent_standin.py env            print the environment variable names it sees, one a line
    agent_standin.py probe PATH...  try to read each PATH (prints `denied PATH` or `read PATH`), run
                                    `git status` and `git diff`, connect to 127.0.0.1:$STANDIN_PORT,
                                    write ~/.claude/probe and ~/.gitconfig, then edit train.py
    agent_standin.py plan           run the next line of the file $STANDIN_PLAN (one mode and its
                                    arguments a line, shell-quoted); $STANDIN_PLAN.n counts the calls

Every mode first reads the briefing from stdin and checks it equals $AUTORESEARCH_BRIEFING's file.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

briefing = sys.stdin.read()
if briefing != Path(os.environ["AUTORESEARCH_BRIEFING"]).read_text():
    sys.exit("stdin and $AUTORESEARCH_BRIEFING differ")
mode, args = sys.argv[1], sys.argv[2:]
if mode == "plan":
    import shlex

    plan = Path(os.environ["STANDIN_PLAN"])
    counter = Path(str(plan) + ".n")
    done = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(done + 1))
    mode, *args = shlex.split(plan.read_text().splitlines()[done])
if mode == "edit":
    old, new = args[0], args[1]
    source = Path("train.py").read_text()
    if old not in source:
        sys.exit(f"{old!r} is not in train.py")
    Path("train.py").write_text(source.replace(old, new, 1))
    print(f"{old.strip()} -> {new.strip()} (from the stand-in CLI)")
    print("It read a briefing of", len(briefing), "characters.")
elif mode == "other":
    Path("prepare.py").write_text(Path("prepare.py").read_text() + "\n# edited by the agent\n")
    print("Edited prepare.py")
elif mode == "hang":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"child {child.pid}", flush=True)  # on stdout: the run's directories are closed to the CLI
    time.sleep(600)
elif mode == "commit":
    Path("train.py").write_text(Path("train.py").read_text() + "\n# committed by the agent\n")
    subprocess.run(["git", "commit", "-qam", "agent commit"], check=True)
    print("Committed")
elif mode == "fail":
    print("something went wrong in the CLI", file=sys.stderr)
    sys.exit(3)
elif mode == "probe":
    import socket

    def attempt(what: str, action) -> None:
        try:
            action()
            print(f"ok {what}")
        except OSError as error:
            print(f"denied {what} ({type(error).__name__})")
            print(error, file=sys.stderr)  # "[Errno 13] Permission denied: '...'", as a CLI reports it

    for path in args:
        attempt(f"read {path}", lambda path=path: Path(path).read_bytes())
    for command in (["git", "status", "--porcelain"], ["git", "diff", "--stat"]):
        done = subprocess.run(command, capture_output=True, text=True)
        print(f"{'ok' if done.returncode == 0 else 'failed'} {' '.join(command)} {done.stderr.strip()[:200]}")

    def connect() -> None:
        with socket.create_connection(("127.0.0.1", int(os.environ["STANDIN_PORT"])), timeout=10) as conn:
            if conn.recv(4) != b"pong":
                raise OSError("no pong")

    attempt("connect", connect)
    home = Path.home()
    attempt("write ~/.claude/probe", lambda: (home / ".claude" / "probe").write_text("state"))
    attempt("write ~/.gitconfig", lambda: (home / ".gitconfig").write_text("[alias]\n  x = !true\n"))
    attempt("write tmp", lambda: Path(os.environ["TMPDIR"], "scratch").write_text("t"))
    source = Path("train.py").read_text()
    Path("train.py").write_text(source.replace("MATRIX_LR = 0.005", "MATRIX_LR = 0.02", 1))
    Path(os.environ["AUTORESEARCH_DESCRIPTION_FILE"]).write_text("probed the sandbox (from the stand-in CLI)\n")
elif mode == "env":
    print("env check")
    print("\n".join(sorted(os.environ)))
