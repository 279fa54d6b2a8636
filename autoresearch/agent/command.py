"""`--agent command`: any coding-agent CLI (Claude Code, Codex, ...) run once per proposal.

`CommandProposer(command).propose(context)` writes the briefing (the rules, prepare.py,
program.md, the trials table, crash and rejection notes, the current train.py and the task;
prompts.command_briefing) to a private temporary file, and runs `sh -c COMMAND` in the run's
worktree with that file on its stdin and its path in $AUTORESEARCH_BRIEFING. The agent edits
train.py in place; the first line of its stdout (or of $AUTORESEARCH_DESCRIPTION_FILE, if it
wrote one) is the description. The harness then validates the result exactly as it validates
every proposal (only train.py changed; it parses; it repeats no earlier trial). Its stdout and
stderr are kept as `agent.log` in the trial's directory.

The process runs in its own process group (`start_new_session`) under a time limit: at the
limit, or on Ctrl-C, the whole group is sent SIGTERM, then SIGKILL, with bounded waits
(runner.kill_group), and the proposal fails. Its environment is childenv's (no credentials)
without ANTHROPIC_*, OPENAI_* and AUTORESEARCH_* variables, except the keys its own program needs
(ANTHROPIC_* and CLAUDE_CODE_* for `claude`, OPENAI_* and CODEX_* for `codex`) and the names given
in `agent-env`.

It runs sandboxed like training (sandbox.agent_policy, applied by cli_launch.py before the shell
starts): it reads and writes the worktree, its private scratch directory and per-tool entries of
`~`; reads the repository's `.git` (writing only this worktree's part of it), the Python, system
and program paths; may connect over TCP (to its API); and reads nothing of the dataset, of the
run directory but the worktree, or of the user's checkout. Where Landlock is missing the mode is
`audit-hook`, which guards nothing for a CLI: it runs with the harness user's rights. The files
that tell git where the worktree's repository is (the worktree's `.git`, and `commondir`, `gitdir`
and `config.worktree` in its `.git/worktrees/<name>`) are compared before and after every run: a
CLI that redirects git (so that the harness's own git would read a configuration it wrote) fails
the proposal and the files are restored before the harness runs git there again.

What this does not protect against: what the sandbox allows — the repository's history through
`.git` (every committed file and trial), the per-tool entries of `~` (shared by all runs), UDP
and UNIX sockets, and everything in `audit-hook` mode. A commit it makes is detected and the
proposal fails; other files it changes are rejected by the loop's validation. Its token usage is
not reported to the harness, so its cost is "unknown" and `--max-cost` refuses it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from autoresearch import childenv, contract, runner, sandbox
from autoresearch.agent import cli_launch, prompts
from autoresearch.agent.base import Proposal, ProposalContext, Usage, attach_partial
from autoresearch.agent.claude import NO_DESCRIPTION, describe
from autoresearch.atomic import write_text_atomic
from autoresearch.errors import UserError

ENV_BRIEFING = "AUTORESEARCH_BRIEFING"
ENV_DESCRIPTION_FILE = "AUTORESEARCH_DESCRIPTION_FILE"
SCRUBBED_PREFIXES = ("ANTHROPIC_", "OPENAI_", "AUTORESEARCH_")
# The keys a known CLI needs to reach its own API (everything else under those prefixes is withheld).
KEYS_BY_PROGRAM = {"claude": ("ANTHROPIC_", "CLAUDE_CODE_"), "codex": ("OPENAI_", "CODEX_")}
# Where a CLI keeps its state when told so (else in `~`): writable in the sandbox like `~/.claude`.
CONFIG_DIR_VARIABLES = ("CLAUDE_CONFIG_DIR", "CODEX_HOME")
# The files that tell git where a linked worktree's repository is (in .git/worktrees/<name>).
GIT_POINTER_FILES = ("commondir", "gitdir", "config.worktree")
DEFAULT_TIMEOUT = 1800.0  # seconds
KILL_GRACE = 5.0
LOG_TAIL_BYTES = 1 << 20  # at most this much of each stream is kept in agent.log
AGENT_LOG = "agent.log"


class AgentCommandError(Exception):
    """The agent command failed: it ran past its limit, exited non-zero, or committed."""


def program_of(command: str) -> str | None:
    """The program a shell command line runs first (after `VAR=value` assignments), or None."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    for word in words:
        if "=" in word and not word.startswith("=") and word.split("=", 1)[0].isidentifier():
            continue
        return word
    return None


def agent_environment(environ: Mapping[str, str], command: str, allowed: Iterable[str] = (),
                      extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The agent's environment: childenv's (no credentials), also without the harness's settings and
    the API keys its program does not need; its own program's keys and `allowed` names pass."""
    program = program_of(command) or ""
    kept_prefixes = KEYS_BY_PROGRAM.get(Path(program).name, ())
    allowed = set(allowed)
    base = {name: value for name, value in environ.items()
            if not name.startswith(SCRUBBED_PREFIXES) or name.startswith(kept_prefixes) or name in allowed}
    keep = [name for name in base if name in allowed or (kept_prefixes and name.startswith(kept_prefixes))]
    return childenv.child_env(extra, base=base, keep=keep)


def git_places(worktree: Path) -> tuple[Path | None, Path | None]:
    """The worktree's own git directory (.git/worktrees/<name>) and the repository's common one
    (.git), asked of git by the harness before the agent runs; (None, None) outside a repository."""
    try:
        result = subprocess.run(["git", "rev-parse", "--git-dir", "--git-common-dir"], cwd=worktree,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None, None
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) != 2:
        return None, None
    return (worktree / lines[0]).resolve(), (worktree / lines[1]).resolve()


def agent_sandbox(worktree: Path, scratch: Path, *, command: str, env: Mapping[str, str], data_dir: Path,
                  run_dir: Path | None) -> sandbox.Policy:
    """The sandbox of one agent run, from what this machine and this run hold (sandbox.agent_policy)."""
    git_dir, common_dir = git_places(worktree)
    checkout = common_dir.parent if common_dir is not None and common_dir.name == ".git" else None
    roots = [Path(root) for root in (run_dir, checkout, contract.cache_dir()) if root is not None]
    home = Path.home()
    return sandbox.agent_policy(
        abi=sandbox.landlock_abi(), worktree=worktree, scratch=scratch, data_dir=data_dir, private_roots=roots,
        python_paths=sandbox.python_paths(), program_paths=sandbox.program_paths(program_of(command), env.get("PATH")),
        git_read=[common_dir] if common_dir is not None else [], git_write=[git_dir] if git_dir is not None else [],
        home=home, home_entries=sandbox.home_config_entries(home, [*roots, data_dir]),
        config_dirs=[env[name] for name in CONFIG_DIR_VARIABLES if env.get(name)],
        devices=[path for path in sandbox.SYSTEM_DEVICES if os.path.exists(path)],
        system_read=[*sandbox.SYSTEM_READ, *sandbox.system_link_targets()])


# --- The files that point git at the repository: the agent may not redirect the harness's git ---------

_DIRECTORY = "directory"


def git_pointer_paths(worktree: Path, git_dir: Path | None) -> list[Path]:
    """The worktree's `.git` and, for a linked worktree, the pointer files of its git directory."""
    paths = [worktree / ".git"]
    if git_dir is not None and not git_dir.is_relative_to(worktree):
        paths += [git_dir / name for name in GIT_POINTER_FILES]
    return paths


def snapshot(paths: Iterable[Path]) -> dict[Path, bytes | str | None]:
    """Each path's state: its bytes, `directory`, `link:<target>`, or None where nothing is there."""
    state: dict[Path, bytes | str | None] = {}
    for path in paths:
        if path.is_symlink():
            state[path] = "link:" + os.readlink(path)
        elif path.is_dir():
            state[path] = _DIRECTORY
        elif path.is_file():
            state[path] = path.read_bytes()
        else:
            state[path] = None
    return state


def restore(before: Mapping[Path, bytes | str | None]) -> list[str]:
    """Put back every path whose state changed since `before`; the names of those that changed."""
    now = snapshot(before)
    changed = [path for path in before if now[path] != before[path]]
    for path in changed:
        original = before[path]
        if original == _DIRECTORY:
            continue  # a repository's own .git directory cannot be rebuilt; the proposal fails all the same
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.is_symlink() or path.exists():
            path.unlink()
        if isinstance(original, bytes):
            staged = path.with_name(path.name + ".autoresearch-restore")
            staged.write_bytes(original)
            os.replace(staged, path)
        elif isinstance(original, str):
            os.symlink(original[len("link:"):], path)
    return [str(path) for path in changed]


@dataclass
class CommandRun:
    returncode: int | None
    timed_out: bool
    seconds: float
    stdout: str
    stderr: str


def _tail(path: Path) -> str:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - LOG_TAIL_BYTES))
        return handle.read().decode("utf-8", errors="replace")


def run_command(command: str, *, cwd: Path, stdin_path: Path, env: Mapping[str, str], timeout: float,
                scratch: Path, kill_grace: float = KILL_GRACE) -> CommandRun:
    """Run `sh -c command` (through cli_launch.py, which applies the sandbox in $AUTORESEARCH_SANDBOX)
    in its own process group; kill the whole group at the limit or on Ctrl-C."""
    stdout_path, stderr_path = scratch / "stdout", scratch / "stderr"
    started = time.monotonic()
    with open(stdin_path, "rb") as stdin, open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        process = subprocess.Popen([sys.executable, cli_launch.__file__, command], cwd=cwd, stdin=stdin,
                                   stdout=stdout, stderr=stderr, env=dict(env), start_new_session=True)
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        except BaseException:  # Ctrl-C: the group must not outlive the harness's interest in it
            runner.kill_group(process.pid, kill_grace, process)
            raise
        # At the limit, and after a normal exit (a child left running in the background), the group goes.
        runner.kill_group(process.pid, kill_grace, process)
    return CommandRun(returncode=None if timed_out else process.returncode, timed_out=timed_out,
                      seconds=time.monotonic() - started, stdout=_tail(stdout_path), stderr=_tail(stderr_path))


def _head(worktree: Path) -> str | None:
    """The worktree's HEAD commit, or None outside a git repository (a dry proposal's scratch copy)."""
    result = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=worktree, capture_output=True,
                            text=True, timeout=30)
    return result.stdout.strip() or None if result.returncode == 0 else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


class CommandProposer:
    """Proposes each experiment by running a coding-agent CLI non-interactively in the worktree."""

    name = "command"

    def __init__(self, command: str, *, timeout: float = DEFAULT_TIMEOUT, allowed_env: Iterable[str] = (),
                 kill_grace: float = KILL_GRACE, data_dir: Path | None = None):
        if not command.strip():
            raise UserError("--agent command needs --agent-command '...'")
        self.command = command
        self.timeout = timeout
        self.allowed_env = tuple(name.strip() for name in allowed_env if name.strip())
        self.kill_grace = kill_grace
        self.data_dir = Path(data_dir) if data_dir is not None else None  # never readable by the CLI

    def cost_unknown_reason(self) -> str | None:
        return "the agent command's CLI reports no token usage to the harness, so its cost is unknown"

    def check(self) -> None:
        """Before the baseline: the command's program exists and can be run."""
        program = program_of(self.command)
        if program is None:
            raise UserError(f"--agent-command {self.command!r} does not parse as a shell command")
        if "/" in program:
            if not (Path(program).is_file() and os.access(program, os.X_OK)):
                raise UserError(f"--agent-command: {program} is not an executable file")
        elif shutil.which(program) is None and program not in _SHELL_BUILTINS:
            raise UserError(f"--agent-command: {program!r} is not on PATH; install it or give its full path")

    def propose(self, context: ProposalContext) -> Proposal:
        transcript: list[dict] = [{"role": "harness", "event": "command", "command": self.command,
                                   "timeout_s": self.timeout}]
        try:
            return self._propose(context, transcript)
        except BaseException as error:
            attach_partial(error, Usage(cost_known=False), transcript)
            raise

    def _propose(self, context: ProposalContext, transcript: list[dict]) -> Proposal:
        worktree = Path(context.worktree)
        current = (worktree / "train.py").read_text(encoding="utf-8")
        briefing = prompts.command_briefing(context, current)
        transcript.append({"role": "user", "content": briefing})
        head_before = _head(worktree)
        with tempfile.TemporaryDirectory(prefix="autoresearch-agent-") as scratch_dir:
            scratch = Path(scratch_dir)
            briefing_path, description_path = scratch / "briefing.md", scratch / "description.txt"
            briefing_path.write_text(briefing, encoding="utf-8")
            env = agent_environment(os.environ, self.command, self.allowed_env,
                                    {ENV_BRIEFING: str(briefing_path), ENV_DESCRIPTION_FILE: str(description_path)})
            run_dir = Path(context.trial_dir).parent if context.trial_dir is not None else None
            policy = agent_sandbox(worktree, scratch, command=self.command, env=env, run_dir=run_dir,
                                   data_dir=self.data_dir or contract.dataset_dir())
            env[sandbox.ENV_POLICY] = policy.to_json()
            transcript[0]["isolation"] = policy.mode
            pointers = snapshot(git_pointer_paths(worktree, git_places(worktree)[0]))
            try:
                run = run_command(self.command, cwd=worktree, stdin_path=briefing_path, env=env,
                                  timeout=self.timeout, scratch=scratch, kill_grace=self.kill_grace)
            finally:  # on Ctrl-C too: before the harness runs git in the worktree again
                redirected = restore(pointers)
            written = description_path.read_text(encoding="utf-8", errors="replace") \
                if description_path.is_file() else ""
        if context.trial_dir is not None:
            Path(context.trial_dir).mkdir(parents=True, exist_ok=True)
            write_text_atomic(Path(context.trial_dir) / AGENT_LOG,
                              f"$ {self.command}\n--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}\n")
        transcript.append({"role": "assistant", "content": run.stdout[-20_000:], "stderr": run.stderr[-4000:],
                           "exit_code": run.returncode, "timed_out": run.timed_out,
                           "seconds": round(run.seconds, 3)})
        denied = sorted({name for line in (run.stdout + "\n" + run.stderr).splitlines()
                         if (name := sandbox.denial_in_line(line, policy))})
        if denied:  # the sandbox stopped it (harmless: nothing was read); the record says what it tried
            transcript[-1]["denied"] = denied
        if redirected:
            raise AgentCommandError(f"the agent command changed git's own files ({', '.join(redirected)}); they "
                                    "were restored; it must only edit train.py")
        if run.timed_out:
            raise AgentCommandError(f"the agent command ran past its limit of {self.timeout:g} s and was killed "
                                    "(with its whole process group)")
        if run.returncode != 0:
            signal_name = _signal_name(run.returncode)
            status = f"was killed by {signal_name}" if signal_name else f"exited with status {run.returncode}"
            raise AgentCommandError(f"the agent command {status}: {_last_line(run.stderr or run.stdout)}")
        if head_before is not None and _head(worktree) != head_before:
            raise AgentCommandError("the agent command made a git commit in the worktree; it must only edit "
                                    "train.py (the harness commits)")
        description = describe(written) or describe(run.stdout) or NO_DESCRIPTION
        return Proposal(description=description, usage=Usage(cost_known=False), transcript=transcript)


_SHELL_BUILTINS = {"cd", "exec", "eval", "command", "env", "true", "false", ":", "."}


def _signal_name(returncode: int | None) -> str | None:
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"
