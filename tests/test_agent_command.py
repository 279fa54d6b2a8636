"""`--agent command`: a stand-in coding-agent CLI (tests/agent_standin.py) run as a real subprocess."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest
from run_fixtures import git, make_project

from autoresearch.agent.base import HistoryRow, ProposalContext, Usage, absorb_partial
from autoresearch.agent.command import CommandProposer, agent_environment, program_of
from autoresearch.errors import UserError
from autoresearch.runner import pid_alive

STANDIN = Path(__file__).resolve().parent / "agent_standin.py"


def standin(*args: str) -> str:
    return " ".join(shlex.quote(part) for part in (sys.executable, str(STANDIN), *args))


@pytest.fixture
def context(tmp_path: Path) -> ProposalContext:
    project = make_project(tmp_path)
    prepare = (project / "prepare.py").read_text()
    train = (project / "train.py").read_text()
    history = [HistoryRow(0, "baseline", 1.0, None, "keep")]
    return ProposalContext(worktree=project, program_md="Lower val_bpb, one change at a time.\n",
                           prepare_py=prepare, best_train_py=train, best_val_bpb=1.0, history=history,
                           trial_number=1, rejection_notes=["trial 0 touched prepare.py"],
                           trial_dir=tmp_path / "trial-0001")


def test_the_cli_edits_train_py_and_its_first_line_is_the_description(context):
    proposal = CommandProposer(standin("edit", "MATRIX_LR = 0.005", "MATRIX_LR = 0.01")).propose(context)
    assert proposal.description == "MATRIX_LR = 0.005 -> MATRIX_LR = 0.01 (from the stand-in CLI)"
    assert "MATRIX_LR = 0.01" in (context.worktree / "train.py").read_text()
    assert not proposal.usage.cost_known and proposal.usage.input_tokens == 0
    briefing = proposal.transcript[1]["content"]
    for expected in ("Lower val_bpb, one change at a time.", "trial 0 touched prepare.py", "MATRIX_LR = 0.005",
                     "do not run `git commit`", "prepare.py (read-only"):
        assert expected in briefing, expected
    log = (context.trial_dir / "agent.log").read_text()
    assert "from the stand-in CLI" in log and proposal.transcript[-1]["exit_code"] == 0


def test_a_cli_that_edits_another_file_leaves_that_for_validation_to_reject(context):
    proposal = CommandProposer(standin("other")).propose(context)
    assert proposal.description == "Edited prepare.py"
    assert git(context.worktree, "status", "--porcelain") == "M prepare.py"  # the loop rejects exactly this


def test_a_hanging_cli_is_killed_with_its_child_at_the_limit(context):
    proposer = CommandProposer(standin("hang"), timeout=2.0, kill_grace=1.0)
    with pytest.raises(Exception, match="ran past its limit of 2 s and was killed") as raised:
        proposer.propose(context)
    usage, transcript = Usage(), []
    absorb_partial(raised.value, usage, transcript)
    assert transcript[-1]["timed_out"] is True and not usage.cost_known
    child = int(transcript[-1]["content"].split()[1])  # "child <pid>"
    assert not pid_alive(child)


def test_a_failing_cli_and_a_committing_cli_fail_the_proposal(context):
    with pytest.raises(Exception, match="exited with status 3: something went wrong in the CLI"):
        CommandProposer(standin("fail")).propose(context)
    head = git(context.worktree, "rev-parse", "HEAD")
    with pytest.raises(Exception, match="made a git commit"):
        CommandProposer(standin("commit")).propose(context)
    assert git(context.worktree, "rev-parse", "HEAD") != head  # the loop resets to the best commit


def test_the_environment_withholds_keys_the_program_does_not_need(context, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "secret-a")
    monkeypatch.setenv("OPENAI_API_KEY", "secret-o")
    monkeypatch.setenv("AUTORESEARCH_DATA_DIR", "/data")
    monkeypatch.setenv("MY_TOKEN", "t")
    monkeypatch.setenv("MY_SETTING", "s")
    proposal = CommandProposer(standin("env")).propose(context)
    seen = set(proposal.transcript[-1]["content"].split())
    assert {"AUTORESEARCH_BRIEFING", "AUTORESEARCH_DESCRIPTION_FILE", "MY_SETTING", "PATH"} <= seen
    assert not seen & {"ANTHROPIC_API_KEY", "OPENAI_API_KEY", "AUTORESEARCH_DATA_DIR", "MY_TOKEN",
                       "AUTORESEARCH_SANDBOX"}  # credentials (childenv) and the launcher's policy stay out
    environ = {"ANTHROPIC_API_KEY": "a", "OPENAI_API_KEY": "o", "AUTORESEARCH_MODEL": "m", "HOME": "/h",
               "CLAUDE_CODE_OAUTH_TOKEN": "c", "CODEX_API_KEY": "x", "GITHUB_TOKEN": "g"}
    python = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}  # childenv's settings for every child
    assert set(agent_environment(environ, "claude -p")) == {"ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "HOME",
                                                            *python}
    assert set(agent_environment(environ, "FOO=1 /usr/bin/codex exec -")) == {"OPENAI_API_KEY", "CODEX_API_KEY",
                                                                             "HOME", *python}
    assert set(agent_environment(environ, "aider", allowed=["OPENAI_API_KEY", "GITHUB_TOKEN"])) == {
        "OPENAI_API_KEY", "GITHUB_TOKEN", "HOME", *python}
    assert program_of("FOO=1 BAR=2 claude -p") == "claude" and program_of("'unclosed") is None


def test_the_check_finds_the_program_or_says_it_is_missing(tmp_path):
    CommandProposer(standin("edit", "a", "b")).check()
    CommandProposer("sh -c true").check()
    with pytest.raises(UserError, match="'no-such-agent-cli' is not on PATH"):
        CommandProposer("no-such-agent-cli -p").check()
    with pytest.raises(UserError, match="is not an executable file"):
        CommandProposer(f"{tmp_path}/missing exec").check()
    with pytest.raises(UserError, match="needs --agent-command"):
        CommandProposer("  ")
    assert os.access(STANDIN, os.X_OK)
