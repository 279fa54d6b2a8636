"""CPU nights with each new agent as a user runs them: `autoresearch run` in a subprocess.

The OpenAI-compatible agent talks to tests/fake_openai.py through the real `openai` package; the
command agent runs tests/agent_standin.py as its CLI. Each night trains and scores for real.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic, Fault, reply, text, tool_use
from fake_openai import FakeOpenAI, call
from fake_openai import reply as chat_reply
from run_fixtures import check_records_and_git, git, make_project, sealed_copy

STANDIN = Path(__file__).resolve().parent / "agent_standin.py"
SMALL = ["--budget", "20", "--device", "cpu", "--seq-len", "64", "--eval-tokens", "4096", "--tag", "t",
         "--noise-runs", "0", "--confirm-runs", "0", "--quarantine-factor", "0", "--no-holdout"]
PRICES = "[tool.autoresearch]\nprice-input = 0.5\nprice-output = 2.0\n"


@pytest.fixture(scope="module")
def run_dataset(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sealed_copy(tiny_dataset, tmp_path_factory.mktemp("agent-nights-data") / "tiny")


def run(project: Path, data_dir: Path, *args: str, timeout: float = 300, **env: str) -> tuple[int, str]:
    environment = {**os.environ, "AUTORESEARCH_DATA_DIR": str(data_dir), **env}
    environment.pop("AUTORESEARCH_DATASET", None)
    done = subprocess.run([sys.executable, "-m", "autoresearch", "run", *SMALL, *args], cwd=project,
                          env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    return done.returncode, done.stdout


def commit_pyproject(project: Path, text: str) -> None:
    (project / "pyproject.toml").write_text(text)
    git(project, "add", "pyproject.toml")
    git(project, "-c", "user.name=Tester", "-c", "user.email=t@example.com", "commit", "-q", "-m", "prices")


def edit(old: str, new: str, description: str) -> list:
    return [chat_reply(call("str_replace_based_edit_tool", {"command": "str_replace", "path": "train.py",
                                                            "old_str": old, "new_str": new}),
                       usage={"prompt_tokens": 1000, "completion_tokens": 40}, cached_tokens=600),
            chat_reply(f"{description}\n\nWhy: a scripted test.", usage={"prompt_tokens": 1100, "completion_tokens": 20})]


@pytest.mark.slow
def test_acceptance_five_trials_with_the_openai_agent(tmp_path: Path, run_dataset: Path) -> None:
    """The Claude agent's acceptance (keep, keep, discard, crash, repair) over Chat Completions."""
    project = make_project(tmp_path)
    commit_pyproject(project, PRICES)
    crash = "MATRIX_LR = 0.03\nraise SystemExit('deliberate crash in the proposal')"
    with FakeOpenAI(models=["local-coder"]) as server:
        server.enqueue(*edit("MATRIX_LR = 0.005", "MATRIX_LR = 0.03", "Raise MATRIX_LR to 0.03"),
                       *edit("MATRIX_LR = 0.03", "MATRIX_LR = 0.0001", "Lower MATRIX_LR to 0.0001"),
                       *edit("MATRIX_LR = 0.03", crash, "Add an early exit"),
                       *edit(crash, "MATRIX_LR = 0.02", "Repair: remove the exit, MATRIX_LR 0.02"))
        code, output = run(project, run_dataset, "--agent", "openai", "--model", "local-coder", "--max-trials", "5",
                           "--max-cost", "1", OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="")
        requests = [json.dumps(body) for body in server.requests]
        assert server.model_lists == 1  # checked once, before the baseline
    assert code == 0, output
    records = check_records_and_git(project, "t")
    statuses = [(r.trial, r.status, r.repair_attempt) for r in records]
    assert statuses[:4] == [(0, "keep", 0), (1, "keep", 0), (2, "discard", 0), (3, "crash", 0)], statuses
    assert statuses[4][0] == 4 and statuses[4][1] in ("keep", "discard") and statuses[4][2] == 1, statuses
    assert any("deliberate crash in the proposal" in body for body in requests[-2:])
    assert [r.description for r in records[1:]] == ["Raise MATRIX_LR to 0.03", "Lower MATRIX_LR to 0.0001",
                                                    "Add an early exit", "Repair: remove the exit, MATRIX_LR 0.02"]
    # 2100 prompt tokens a trial, 600 of them cached; configured $0.5 in (cached priced as input), $2 out
    for record in records[1:]:
        assert record.tokens == {"input": 1500, "output": 60, "cache_read": 600, "cache_write": 0}
        assert record.cost_usd == pytest.approx((2100 * 0.5 + 60 * 2.0) / 1e6)
    assert "run t finished: reached --max-trials 5" in output


@pytest.mark.slow
def test_a_night_with_a_coding_agent_cli(tmp_path: Path, run_dataset: Path) -> None:
    """A stand-in CLI edits train.py, then edits another file (rejected), then hangs (killed at the limit)."""
    project = make_project(tmp_path)
    home = tmp_path / "home"  # the stand-in keeps its state in ~/.standin, as a CLI does: the sandbox allows that
    plan = home / ".standin" / "plan.txt"
    plan.parent.mkdir(parents=True)
    plan.write_text("edit 'MATRIX_LR = 0.005' 'MATRIX_LR = 0.03'\nother\nother\nother\nhang\n"
                    "edit 'MATRIX_LR = 0.03' 'MATRIX_LR = 0.02'\n")
    # installed where a CLI lives in a home directory: the sandbox lets the agent read that, not tests/
    standin = home / ".standin" / "bin" / STANDIN.name
    standin.parent.mkdir()
    shutil.copy(STANDIN, standin)
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(standin))} plan"
    code, output = run(project, run_dataset, "--agent", "command", "--agent-command", command,
                       "--agent-timeout", "3", "--max-trials", "4", STANDIN_PLAN=str(plan), HOME=str(home))
    assert code == 0, output
    records = check_records_and_git(project, "t")
    # the hang is an agent error: recorded, but not counted toward --max-trials (nothing was tried)
    assert [r.status for r in records][:4] == ["keep", "keep", "rejected", "rejected"], \
        [(r.status, r.failure_reason) for r in records]
    assert len(records) == 5 and records[3].extra.get("agent_error") and records[4].status in ("keep", "discard")
    assert records[1].description == "MATRIX_LR = 0.005 -> MATRIX_LR = 0.03 (from the stand-in CLI)"
    assert "prepare.py" in records[2].failure_reason
    assert "ran past its limit of 3 s and was killed" in records[3].failure_reason
    assert (plan.parent / "plan.txt.n").read_text() == "6"  # an edit, three tries at another file, a hang, an edit
    run_dir = project / "runs" / "t"
    assert "from the stand-in CLI" in (run_dir / "trial-0001" / "agent.log").read_text()
    assert "prepare.py" not in git(run_dir / "worktree", "status", "--porcelain")


@pytest.mark.slow
def test_a_conversation_that_fails_after_paid_turns_is_counted_in_the_record(tmp_path: Path,
                                                                              run_dataset: Path) -> None:
    project = make_project(tmp_path)
    with FakeAnthropic() as server:
        server.enqueue(reply(text("Looking."), tool_use("str_replace_based_edit_tool",
                                                        {"command": "view", "path": "train.py"}),
                             usage={"input_tokens": 3000, "output_tokens": 200}),
                       Fault.status(400))
        code, output = run(project, run_dataset, "--agent", "claude", "--max-trials", "3",
                           ANTHROPIC_BASE_URL=server.base_url, ANTHROPIC_API_KEY="test-key")
    assert code != 0 and "rejected the request (400" in output, output
    records = check_records_and_git(project, "t")
    assert [r.status for r in records] == ["keep", "rejected"]
    assert records[1].tokens["input"] == 3000 and records[1].tokens["output"] == 200
    assert records[1].cost_usd == pytest.approx((3000 * 2 + 200 * 10) / 1e6)  # Sonnet 5.5's $2 / $10
    transcript = json.loads((project / "runs" / "t" / "trial-0001" / "transcript.json").read_text())
    assert any(message.get("role") == "assistant" for message in transcript["messages"])
