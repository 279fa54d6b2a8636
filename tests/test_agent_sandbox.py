"""The command agent's CLI runs in the kernel sandbox: a real stand-in process in a real run layout.

The layout is a night's: the user's checkout (a git repository) with runs/<tag>/ holding the
records, two trial directories (one with weights) and the linked worktree the agent edits; a
dataset under the autoresearch cache; a home directory with per-tool configuration. The stand-in
(tests/agent_standin.py `probe`) tries what a curious CLI would.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from run_fixtures import git, make_project

from autoresearch import sandbox
from autoresearch.agent import cli_launch
from autoresearch.agent.base import HistoryRow, ProposalContext
from autoresearch.agent.command import CommandProposer

STANDIN = Path(__file__).resolve().parent / "agent_standin.py"
needs_landlock = pytest.mark.skipif(sandbox.landlock_abi() == 0, reason="this kernel offers no Landlock")


class Night:
    def __init__(self, root: Path):
        self.project = make_project(root)
        self.run_dir = self.project / "runs" / "t"
        self.worktree = self.run_dir / "worktree"
        git(self.project, "worktree", "add", "-q", "-b", "autoresearch/t", str(self.worktree))
        (self.run_dir / "trials.jsonl").write_text('{"trial": 0, "val_bpb": 1.0}\n')
        (self.run_dir / "trial-0000").mkdir()
        (self.run_dir / "trial-0000" / "model.pt").write_bytes(b"weights")
        self.trial_dir = self.run_dir / "trial-0001"
        self.cache = root / "cache"
        self.data = self.cache / "datasets" / "tiny"
        self.data.mkdir(parents=True)
        for name in ("val.bin", "holdout.bin", "train.bin", "tokenizer.json"):
            (self.data / name).write_bytes(b"tokens")
        self.home = root / "home"
        for directory in (".claude", ".config/git", ".config/tool"):
            (self.home / directory).mkdir(parents=True)
        (self.home / ".gitconfig").write_text("[user]\n  name = Tester\n")

    def context(self) -> ProposalContext:
        train = (self.worktree / "train.py").read_text()
        return ProposalContext(worktree=self.worktree, program_md="Lower val_bpb.\n", prepare_py="",
                               best_train_py=train, best_val_bpb=1.0, history=[HistoryRow(0, "baseline", 1.0, None, "keep")],
                               trial_number=1, trial_dir=self.trial_dir)

    def secrets(self) -> list[Path]:
        return [self.data / "val.bin", self.data / "holdout.bin", self.data / "train.bin",
                self.run_dir / "trials.jsonl", self.run_dir / "trial-0000" / "model.pt", self.project / "program.md"]


@pytest.fixture
def night(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Night:
    setting = Night(tmp_path)
    monkeypatch.setenv("HOME", str(setting.home))
    monkeypatch.setenv("AUTORESEARCH_CACHE_DIR", str(setting.cache))
    return setting


@pytest.fixture
def server_port(monkeypatch: pytest.MonkeyPatch):
    """A TCP server on 127.0.0.1 that answers every connection with b"pong" (the agent's API stands in)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)

    def serve() -> None:
        try:
            while True:
                connection, _ = listener.accept()
                with connection:
                    connection.sendall(b"pong")
        except OSError:
            return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    monkeypatch.setenv("STANDIN_PORT", str(port))
    yield port
    listener.close()
    thread.join(timeout=5)


def probe(night: Night) -> tuple[str, list[str], list[str]]:
    command = " ".join(shlex.quote(part) for part in
                       (sys.executable, str(STANDIN), "probe", *(str(path) for path in night.secrets())))
    proposal = CommandProposer(command, data_dir=night.data).propose(night.context())
    answer = proposal.transcript[-1]
    return proposal.description, answer["content"].splitlines(), answer.get("denied", [])


@needs_landlock
def test_the_cli_cannot_read_data_records_weights_or_the_checkout_but_edits_and_connects(night, server_port):
    description, lines, denied = probe(night)
    assert {"val.bin", "holdout.bin", "trials.jsonl", "model.pt", "program.md"} <= set(denied)  # in the transcript
    for secret in night.secrets():
        assert f"denied read {secret} (PermissionError)" in lines, (secret, lines)
    assert "ok connect" in lines  # TCP to its API stays open
    assert any(line.startswith("ok git status --porcelain") for line in lines), lines
    assert any(line.startswith("ok git diff --stat") for line in lines), lines
    assert "ok write ~/.claude/probe" in lines and (night.home / ".claude" / "probe").read_text() == "state"
    assert "denied write ~/.gitconfig (PermissionError)" in lines  # the harness's own git reads it
    assert (night.home / ".gitconfig").read_text() == "[user]\n  name = Tester\n"
    assert "ok write tmp" in lines
    assert description == "probed the sandbox (from the stand-in CLI)"
    assert "MATRIX_LR = 0.02" in (night.worktree / "train.py").read_text()
    assert git(night.worktree, "status", "--porcelain") == "M train.py"


def test_without_landlock_the_cli_runs_as_before_and_the_transcript_says_so(night, server_port, monkeypatch):
    monkeypatch.setenv(sandbox.ENV_ISOLATION, "audit-hook")
    command = " ".join(shlex.quote(part) for part in (sys.executable, str(STANDIN), "probe", str(night.data / "val.bin")))
    proposal = CommandProposer(command, data_dir=night.data).propose(night.context())
    lines = proposal.transcript[-1]["content"].splitlines()
    assert f"ok read {night.data / 'val.bin'}" in lines  # only the audit hook, which a CLI does not run under
    assert proposal.transcript[0]["isolation"] == sandbox.AUDIT_HOOK


@needs_landlock
def test_a_cli_that_redirects_git_is_caught_and_the_pointer_restored(night):
    dot_git = night.worktree / ".git"
    commondir = night.project / ".git" / "worktrees" / "worktree" / "commondir"
    original, original_common = dot_git.read_text(), commondir.read_text()
    fake = night.worktree / "fake-git"
    command = (f"printf '{fake}\\n' > {commondir} && mkdir {fake} && printf 'gitdir: {fake}\\n' > .git "
               "&& echo redirected")
    with pytest.raises(Exception, match="changed git's own files") as raised:
        CommandProposer(command, data_dir=night.data).propose(night.context())
    assert str(dot_git) in str(raised.value) and str(commondir) in str(raised.value)
    assert dot_git.read_text() == original and commondir.read_text() == original_common
    assert git(night.worktree, "rev-parse", "--git-common-dir") == str(night.project / ".git")


# --- The pure rules, with hand-written expectations (no path below /nowhere exists) ------------------


def test_the_agent_policy_opens_the_worktree_git_tools_and_home_config_and_nothing_private():
    home = "/nowhere/home"
    policy = sandbox.agent_policy(
        abi=7, worktree=f"{home}/proj/runs/t/worktree", scratch="/nowhere/tmp/agent-1",
        data_dir=f"{home}/.cache/autoresearch/datasets/tiny",
        private_roots=[f"{home}/proj/runs/t", f"{home}/proj", f"{home}/.cache/autoresearch"],
        python_paths=["/nowhere/venv/lib/python3.11/site-packages", home, f"{home}/proj", f"{home}/.pyenv/lib"],
        program_paths=["/nowhere/node/bin", "/nowhere/node", "/nowhere", f"{home}/.cargo/bin"],
        git_read=[f"{home}/proj/.git"], git_write=[f"{home}/proj/.git/worktrees/worktree"], home=home,
        home_entries=[f"{home}/.cache", f"{home}/.cache/autoresearch", f"{home}/.cache/pip", f"{home}/.claude",
                      f"{home}/.claude.json", f"{home}/.config", f"{home}/.config/git", f"{home}/.config/tool",
                      f"{home}/.gitconfig", f"{home}/.bashrc", f"{home}/.local", f"{home}/.local/lib",
                      f"{home}/.local/share", f"{home}/.pyenv", f"{home}/.cargo", home, "/nowhere/other/.hidden"],
        config_dirs=["/nowhere/codex-home"], devices=["/dev/null"], system_read=("/usr", "/etc"))
    assert policy.mode == "landlock-v7" and policy.abi == 7 and policy.no_network is False
    assert policy.tmp_dir == "/nowhere/tmp/agent-1/tmp"
    assert policy.read == ("/nowhere/venv/lib/python3.11/site-packages", f"{home}/.pyenv/lib", "/nowhere/node/bin",
                           "/nowhere/node", f"{home}/.cargo/bin", "/usr", "/etc", f"{home}/proj/.git",
                           f"{home}/.config", f"{home}/.config/git", f"{home}/.gitconfig", f"{home}/.bashrc",
                           f"{home}/.local", f"{home}/.local/lib", f"{home}/.pyenv", f"{home}/.cargo")
    assert policy.write == (f"{home}/proj/runs/t/worktree", "/nowhere/tmp/agent-1",
                            f"{home}/proj/.git/worktrees/worktree", f"{home}/.cache/pip", f"{home}/.claude",
                            f"{home}/.claude.json", f"{home}/.config/tool", f"{home}/.local/share",
                            "/nowhere/codex-home", "/dev/shm")
    assert policy.devices == ("/dev/null",)
    assert set(policy.dropped) == {home, f"{home}/proj", "/nowhere", f"{home}/.cache", f"{home}/.cache/autoresearch",
                                   "/nowhere/other/.hidden"}
    assert {"val.bin", "holdout.bin", "trials.jsonl", "model.pt", "program.md"} <= set(policy.watched)
    assert sandbox.agent_policy(abi=0, worktree="/nowhere/w", scratch="/nowhere/s", data_dir="/nowhere/d",
                                private_roots=[], python_paths=[], home="/nowhere/h").mode == sandbox.AUDIT_HOOK


def test_a_config_dir_that_holds_a_private_root_or_git_config_is_not_writable():
    policy = sandbox.agent_policy(abi=7, worktree="/nowhere/w", scratch="/nowhere/s", data_dir="/nowhere/data",
                                  private_roots=["/nowhere/run"], python_paths=[], home="/nowhere/h",
                                  config_dirs=["/nowhere", "/nowhere/data/x", "/nowhere/h/.config", "/nowhere/cfg"],
                                  system_read=())
    assert "/nowhere/cfg" in policy.write and "/nowhere/h/.config" in policy.read
    assert not {"/nowhere", "/nowhere/data/x", "/nowhere/h/.config"} & set(policy.write)
    assert "/nowhere/data/x" not in policy.read and {"/nowhere", "/nowhere/data/x"} <= set(policy.dropped)


# --- What the machine holds: real files in a temporary directory -------------------------------------


def test_the_home_listing_descends_into_dot_directories_around_private_roots_and_git_config(tmp_path):
    home = tmp_path / "home"
    for directory in (".cache/autoresearch", ".cache/pip", ".claude", ".config/git", ".config/tool", ".local/bin",
                      ".local/share", ".npm/_cacache", "proj"):
        (home / directory).mkdir(parents=True)
    (home / ".claude.json").write_text("{}")
    found = sandbox.home_config_entries(home, [home / ".cache" / "autoresearch", home / "proj"])
    assert found == [str(home / name) for name in (
        ".cache", ".cache/autoresearch", ".cache/pip", ".claude", ".claude.json", ".config", ".config/git",
        ".config/tool", ".local", ".local/bin", ".local/share", ".npm")]


def test_the_program_paths_follow_a_linked_script_to_its_package_and_its_interpreter(tmp_path):
    prefix, other = tmp_path / "prefix", tmp_path / "other"
    package = prefix / "lib" / "node_modules" / "pkg"
    package.mkdir(parents=True)
    (prefix / "bin").mkdir()
    (other / "bin").mkdir(parents=True)
    (package / "cli.js").write_text("#!/usr/bin/env fakenode\nconsole.log(1)\n")
    (package / "cli.js").chmod(0o755)
    (prefix / "bin" / "tool").symlink_to(package / "cli.js")
    (other / "bin" / "fakenode").write_text("#!/bin/sh\n")
    (other / "bin" / "fakenode").chmod(0o755)
    search = f"{prefix}/bin:{other}/bin:relative/bin"
    assert sandbox.program_paths("tool", search) == [
        f"{prefix}/bin", str(prefix), str(package), f"{prefix}/lib", f"{other}/bin", str(other)]
    assert sandbox.program_paths(None, search) == [f"{prefix}/bin", f"{other}/bin"]


def test_links_in_etc_that_lead_outside_the_system_paths_are_found(tmp_path):
    etc, run = tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    run.mkdir()
    (run / "stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
    (etc / "resolv.conf").symlink_to(run / "stub-resolv.conf")
    (etc / "localtime").symlink_to(etc / "zone")
    (etc / "zone").write_text("UTC")
    (etc / "gone").symlink_to(run / "missing")
    assert sandbox.system_link_targets(str(etc), system_read=(str(etc),)) == [str(run / "stub-resolv.conf")]


def test_the_launcher_refuses_a_policy_it_cannot_apply_in_one_line():
    env = {**os.environ, sandbox.ENV_POLICY: "not json"}
    done = subprocess.run([sys.executable, cli_launch.__file__, "echo ran"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: isolation: could not apply the sandbox:") and done.stderr.count("\n") == 1
    usage = subprocess.run([sys.executable, cli_launch.__file__], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr
