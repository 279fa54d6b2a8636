"""The agent commands as a user runs them: `agents`, `propose --dry-run`, and the checks before a baseline."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic
from fake_openai import FakeOpenAI, call, reply
from run_fixtures import git, make_project, sealed_copy

from autoresearch import cli

STANDIN = Path(__file__).resolve().parent / "agent_standin.py"


@pytest.fixture(scope="module")
def run_dataset(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sealed_copy(tiny_dataset, tmp_path_factory.mktemp("agent-cli-data") / "tiny")


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(args))
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_agents_lists_every_agent_and_how_to_check_it(capsys):
    code, out, _ = run_cli(capsys, "agents")
    assert code == 0
    for name in ("claude", "openai", "command", "offline", "auto"):
        assert f"\n{name}\n" in f"\n{out}"
    assert "autoresearch propose --agent NAME" in out and "OPENAI_BASE_URL" in out


def test_a_dry_proposal_with_a_command_agent_prints_the_diff_and_touches_nothing(tmp_path, capsys):
    project = make_project(tmp_path)
    before = git(project, "status", "--porcelain")
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))} edit 'MATRIX_LR = 0.005' 'MATRIX_LR = 0.02'"
    code, out, err = run_cli(capsys, "propose", "--dry-run", "--agent", "command", "--agent-command", command,
                             "--project-dir", str(project))
    assert code == 0, err
    assert "agent command: MATRIX_LR = 0.005 -> MATRIX_LR = 0.02 (from the stand-in CLI)" in out
    assert "-MATRIX_LR = 0.005\n+MATRIX_LR = 0.02" in out and "cost unknown" in out
    assert "MATRIX_LR = 0.005" in (project / "train.py").read_text()
    assert git(project, "status", "--porcelain") == before and not (project / "runs").exists()


def test_a_dry_proposal_with_the_openai_agent_against_a_local_server(tmp_path, capsys, monkeypatch):
    project = make_project(tmp_path)
    with FakeOpenAI(models=["qwen-coder"]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs no key
        server.enqueue(reply(call("str_replace_based_edit_tool", {
            "command": "str_replace", "path": "train.py", "old_str": "MATRIX_LR = 0.005",
            "new_str": "MATRIX_LR = 0.03"})), reply("MATRIX_LR 0.005 -> 0.03"))
        code, out, err = run_cli(capsys, "propose", "--agent", "openai", "--model", "qwen-coder",
                                 "--project-dir", str(project))
    assert code == 0, err
    assert "agent openai: MATRIX_LR 0.005 -> 0.03" in out and "+MATRIX_LR = 0.03" in out
    assert "tokens: 200 in, 40 out" in out and "cost unknown" in out
    assert server.model_lists == 1  # the fail-fast check ran first


def test_max_cost_refuses_an_unpriced_model_unless_prices_are_configured(tmp_path, capsys, monkeypatch):
    project = make_project(tmp_path)
    with FakeOpenAI(models=["qwen-coder"]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        code, _, err = run_cli(capsys, "propose", "--agent", "openai", "--model", "qwen-coder", "--max-cost", "5",
                               "--project-dir", str(project))
        assert code == 2 and err.startswith("error: --max-cost $5 cannot be enforced: model 'qwen-coder' has no "
                                            "price") and err.count("\n") == 1
        (project / "pyproject.toml").write_text("[tool.autoresearch]\nprice-input = 0.2\nprice-output = 0.6\n")
        server.enqueue(reply("no change"), reply("still none"))
        code, out, err = run_cli(capsys, "propose", "--agent", "openai", "--model", "qwen-coder", "--max-cost", "5",
                                 "--project-dir", str(project))
        assert code == 0, err
        assert "cost $0.0001" in out  # 200 in x $0.2 + 40 out x $0.6 per million = $0.000064
    code, _, err = run_cli(capsys, "propose", "--agent", "command", "--agent-command", "true", "--max-cost", "1",
                           "--project-dir", str(project))
    assert code == 2 and "reports no token usage" in err


@pytest.mark.parametrize("agent, env, message", [
    ("claude", {"ANTHROPIC_API_KEY": "wrong-key"}, "error: the Anthropic API rejected the API key (401)"),
    ("claude", {"ANTHROPIC_API_KEY": "test-key", "AUTORESEARCH_MODEL": "claude-nope"},
     "error: the Anthropic API does not know model 'claude-nope' (404)"),
    ("openai", {"OPENAI_API_KEY": "wrong-key", "AUTORESEARCH_MODEL": "qwen-coder"},
     "error: the OpenAI-compatible API rejected the API key (401)"),
    ("openai", {"OPENAI_API_KEY": "test-key", "AUTORESEARCH_MODEL": "gpt-nope"},
     "error: the OpenAI-compatible API at"),
    ("command", {"AUTORESEARCH_AGENT_COMMAND": "no-such-agent-cli -p"},
     "error: --agent-command: 'no-such-agent-cli' is not on PATH"),
])
def test_a_run_fails_fast_before_the_baseline(agent, env, message, tmp_path, run_dataset, capsys, monkeypatch):
    project = make_project(tmp_path)
    with FakeAnthropic(known_models={"claude-sonnet-5-5"}, api_key="test-key") as anthropic_server, \
            FakeOpenAI(models=["qwen-coder"], api_key="test-key") as openai_server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_server.base_url)
        monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code, _, err = run_cli(capsys, "run", "--project-dir", str(project), "--data-dir", str(run_dataset),
                               "--agent", agent, "--device", "cpu", "--tag", "t")
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert not (project / "runs" / "t").exists()  # nothing was trained or recorded
