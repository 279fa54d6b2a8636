"""`autoresearch run` as a user runs it: real subprocesses, real signals, resumes, the real agents.

Ctrl-C and SIGKILL are sent to a real `autoresearch run` process. Its train.py sleeps or crashes at
the very top when the TEST_* variables of tests/run_fixtures.py say so, before torch is imported,
so those tests cost about a second each; the offline and Claude runs train and score for real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic, Fault, reply, text, tool_use
from run_fixtures import check_records_and_git, git, make_project, sealed_copy

from autoresearch import cli
from autoresearch.runner import ProcessIdentity, pid_alive


@pytest.fixture(scope="session")
def run_dataset(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sealed_copy(tiny_dataset, tmp_path_factory.mktemp("cli-run-data") / "tiny")


SMALL = ["--budget", "20", "--device", "cpu", "--seq-len", "64", "--eval-tokens", "4096", "--tag", "t",
         "--noise-runs", "0", "--confirm-runs", "0", "--quarantine-factor", "0", "--no-holdout"]


def start(project: Path, data_dir: Path, *args: str, **env: str) -> subprocess.Popen:
    environment = {**os.environ, "AUTORESEARCH_DATA_DIR": str(data_dir), **env}
    environment.pop("AUTORESEARCH_DATASET", None)
    return subprocess.Popen([sys.executable, "-m", "autoresearch", "run", *SMALL, *args], cwd=project,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def wait_until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def training_started(project: Path, trial: int) -> bool:
    log = project / "runs" / "t" / f"trial-{trial:04d}" / "train.log"
    return log.exists() and "step 00001" in log.read_text()


def alive(pid: int) -> bool:
    return pid_alive(pid)


def run_state(project: Path) -> dict:
    return json.loads((project / "runs" / "t" / "run.json").read_text())


# --- errors a user can make --------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--budget", "-5"], "error: --budget: must be greater than 0 (got -5)"),
    (["--agent", "gpt"], "error: --agent: 'gpt' is not one of auto, claude, openai, command, offline"),
    (["--device", "tpu"], "error: --device: 'tpu' is not one of auto, cuda, cpu, mps"),
    (["--tag", "a b"], "error: --tag: 'a b' is not a usable tag"),
    (["--max-repairs", "-1"], "error: --max-repairs: must not be negative (got -1)"),
])
def test_bad_values_are_one_line_errors(args: list[str], message: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--project-dir", str(tmp_path), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err and "Traceback" not in err


def test_a_bad_number_or_unknown_flag_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--budget", "soon"], ["--nights", "2"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["run", "--project-dir", str(tmp_path), *args])
        assert exit_info.value.code == 2
        assert "Traceback" not in capsys.readouterr().err


def test_project_and_dataset_problems_are_one_line_errors(tmp_path: Path, run_dataset: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    def error_of(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["run", *args])
        assert exit_info.value.code == 2
        return capsys.readouterr().err.strip()

    assert error_of("--project-dir", str(tmp_path)).startswith(f"error: {tmp_path} is not a git repository")
    project = make_project(tmp_path)
    missing = tmp_path / "nowhere"
    assert error_of("--project-dir", str(project), "--data-dir", str(missing)) == (
        f"error: no prepared dataset at {missing}; run `autoresearch prepare` (or pass --dataset / set "
        "AUTORESEARCH_DATA_DIR)")
    (project / "prepare.py").write_text("# edited\n")
    assert error_of("--project-dir", str(project), "--data-dir", str(run_dataset)) == (
        "error: prepare.py has uncommitted changes; commit or stash them before `autoresearch run`")
    git(project, "checkout", "--", "prepare.py")
    assert error_of("--project-dir", str(project), "--resume").startswith("error: --resume: there is no run")
    assert error_of("--project-dir", str(project), "--data-dir", str(run_dataset), "--agent", "claude").startswith(
        "error: --agent claude needs an Anthropic API key")  # at once, not after the baseline
    assert not (project / "runs").exists()


def test_pyproject_settings_environment_and_flags_merge_in_that_order(tmp_path: Path) -> None:
    from autoresearch.runconfig import load_config

    (tmp_path / "pyproject.toml").write_text('[tool.autoresearch]\nbudget = 60\nmax-repairs = 5\nmodel = "m1"\n')
    config = load_config({}, project_dir=tmp_path, environ={})
    assert (config.budget, config.max_repairs, config.model) == (60.0, 5, "m1")
    config = load_config({}, project_dir=tmp_path, environ={"AUTORESEARCH_MODEL": "m2",
                                                            "AUTORESEARCH_TIME_BUDGET": "90"})
    assert (config.budget, config.model) == (90.0, "m2")
    config = load_config({"budget": 30, "model": "m3"}, project_dir=tmp_path, environ={"AUTORESEARCH_MODEL": "m2"})
    assert (config.budget, config.model, config.max_repairs) == (30.0, "m3", 5)
    (tmp_path / "pyproject.toml").write_text("[tool.autoresearch]\nbudgte = 60\n")
    with pytest.raises(Exception, match="unknown setting budgte"):
        load_config({}, project_dir=tmp_path, environ={})


# --- stopping and resuming ---------------------------------------------------------------------


def test_ctrl_c_during_training_then_resume_continues_the_numbering(tmp_path: Path, run_dataset: Path) -> None:
    project = make_project(tmp_path)
    process = start(project, run_dataset, TEST_SLEEP_AT_START="60")
    wait_until(lambda: training_started(project, 0))
    pgid = ProcessIdentity.from_json((project / "runs" / "t" / "training.pgid").read_text()).pgid
    process.send_signal(signal.SIGINT)
    code, output = finish(process, timeout=30)
    assert code == 130, output
    assert "run t interrupted: interrupted by SIGINT" in output
    assert not alive(pgid)
    records = check_records_and_git(project, "t")
    assert [(r.trial, r.status) for r in records] == [(0, "interrupted")]
    assert records[0].failure_reason == "interrupted by SIGINT" and records[0].training_seconds > 0
    assert run_state(project)["status"] == "interrupted"
    assert not (project / "runs" / "t" / "lock").exists()

    code, output = finish(start(project, run_dataset, "--resume", "--max-trials", "2", TEST_CRASH_AT_START="1"))
    assert code == 1, output  # the baseline crashed: the run stops and says why
    records = check_records_and_git(project, "t")
    assert [(r.trial, r.status) for r in records] == [(0, "interrupted"), (1, "crash")]
    assert records[1].failure_reason == "train.py exited with status 1: crashing on purpose (TEST_CRASH_AT_START)"
    assert run_state(project)["status"] == "finished" and run_state(project)["sessions"] == 2


def test_sigkill_during_training_then_resume(tmp_path: Path, run_dataset: Path) -> None:
    project = make_project(tmp_path)
    process = start(project, run_dataset, TEST_SLEEP_AT_START="60")
    wait_until(lambda: training_started(project, 0))
    pgid = ProcessIdentity.from_json((project / "runs" / "t" / "training.pgid").read_text()).pgid
    process.send_signal(signal.SIGKILL)
    finish(process)
    wait_until(lambda: not alive(pgid), timeout=10)  # training dies with its harness
    assert (project / "runs" / "t" / "lock").exists()  # stale: its pid is dead
    assert run_state(project)["status"] == "running"

    code, output = finish(start(project, run_dataset, "--max-trials", "2", TEST_CRASH_AT_START="1"))  # same --tag
    assert code == 1, output
    records = check_records_and_git(project, "t")
    assert [(r.trial, r.status) for r in records] == [(0, "interrupted"), (1, "crash")]
    assert "recorded when the run resumed" in records[0].failure_reason


def test_a_second_ctrl_c_exits_at_once_and_resume_repairs_the_state(tmp_path: Path, run_dataset: Path) -> None:
    project = make_project(tmp_path)
    process = start(project, run_dataset, TEST_SLEEP_AT_START="60", TEST_IGNORE_SIGTERM="1")
    wait_until(lambda: training_started(project, 0))
    pgid = ProcessIdentity.from_json((project / "runs" / "t" / "training.pgid").read_text()).pgid
    process.send_signal(signal.SIGINT)  # training ignores SIGTERM: the clean stop waits out its grace
    time.sleep(0.5)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    code, _ = finish(process, timeout=30)
    assert code == 130 and time.monotonic() - started < 3
    wait_until(lambda: not alive(pgid), timeout=10)
    assert run_state(project)["status"] == "interrupted"

    code, output = finish(start(project, run_dataset, "--resume", "--max-trials", "2", TEST_CRASH_AT_START="1"))
    assert code == 1, output
    records = check_records_and_git(project, "t")
    assert [(r.trial, r.status) for r in records] == [(0, "interrupted"), (1, "crash")]


# --- whole runs with the real agents -----------------------------------------------------------


@pytest.mark.slow
def test_acceptance_a_short_run_with_the_offline_agent(tmp_path: Path, run_dataset: Path) -> None:
    project = make_project(tmp_path)
    code, output = finish(start(project, run_dataset, "--max-trials", "3", "--agent", "offline"), timeout=300)
    assert code == 0, output
    records = check_records_and_git(project, "t")
    assert [r.trial for r in records] == [0, 1, 2]
    assert records[0].status == "keep" and records[0].val_bpb > 0
    assert all(r.status in ("keep", "discard") for r in records[1:]), [(r.status, r.failure_reason) for r in records]
    assert all(" -> " in r.description for r in records[1:])  # KNOB old -> new
    assert "run t finished: reached --max-trials 3; best val_bpb" in output
    assert (project / "runs" / "t" / "results.tsv").read_text().startswith("commit\tval_bpb\tmemory_gb\tstatus")


@pytest.mark.slow
def test_claude_agent_ctrl_c_while_it_thinks_then_resume(tmp_path: Path, run_dataset: Path) -> None:
    project = make_project(tmp_path)
    with FakeAnthropic() as server:
        env = {"ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": "test-key"}
        server.enqueue(Fault.slow(60))
        process = start(project, run_dataset, "--agent", "claude", "--max-trials", "3", **env)
        wait_until(lambda: len(server.requests) >= 1, timeout=120)  # the baseline is done; the agent is asked
        process.send_signal(signal.SIGINT)
        code, output = finish(process, timeout=30)
        assert code == 130, output
        records = check_records_and_git(project, "t")
        assert [(r.trial, r.status) for r in records] == [(0, "keep"), (1, "interrupted")]
        assert records[1].commit == ""

        server.enqueue(
            reply(tool_use("str_replace_based_edit_tool", {"command": "str_replace", "path": "train.py",
                                                           "old_str": "MATRIX_LR = 0.005",
                                                           "new_str": "MATRIX_LR = 0.03"}),
                  usage={"input_tokens": 1000, "output_tokens": 50}),
            reply(text("Raise MATRIX_LR from 0.005 to 0.03\n\nThe bigram learns too slowly."),
                  usage={"input_tokens": 1200, "output_tokens": 30}),
        )
        code, output = finish(start(project, run_dataset, "--resume", "--agent", "claude", "--max-trials", "3",
                                    **env), timeout=300)
        assert code == 0, output
    records = check_records_and_git(project, "t")
    assert [(r.trial, r.status) for r in records] == [(0, "keep"), (1, "interrupted"), (2, "keep")]
    assert records[2].description.startswith("Raise MATRIX_LR from 0.005 to 0.03")
    assert records[2].tokens["input"] >= 2200 and records[2].val_bpb < records[0].val_bpb
    assert "MATRIX_LR = 0.03" in (project / "runs" / "t" / "worktree" / "train.py").read_text()


def edit(old: str, new: str, description: str) -> list:
    """One scripted proposal: a str_replace on train.py, then the final message."""
    return [reply(tool_use("str_replace_based_edit_tool", {"command": "str_replace", "path": "train.py",
                                                           "old_str": old, "new_str": new}),
                  usage={"input_tokens": 1000, "output_tokens": 40}),
            reply(text(f"{description}\n\nWhy: a scripted test."), usage={"input_tokens": 1100, "output_tokens": 20})]


@pytest.mark.slow
def test_acceptance_five_trials_with_the_claude_agent(tmp_path: Path, run_dataset: Path) -> None:
    """Issue 4's acceptance with the Claude agent: the real SDK against the fake Messages API."""
    project = make_project(tmp_path)
    crash = "MATRIX_LR = 0.03\nraise SystemExit('deliberate crash in the proposal')"
    with FakeAnthropic() as server:
        server.enqueue(*edit("MATRIX_LR = 0.005", "MATRIX_LR = 0.03", "Raise MATRIX_LR to 0.03"),
                       *edit("MATRIX_LR = 0.03", "MATRIX_LR = 0.0001", "Lower MATRIX_LR to 0.0001"),
                       *edit("MATRIX_LR = 0.03", crash, "Add an early exit"),
                       *edit(crash, "MATRIX_LR = 0.02", "Repair: remove the exit, MATRIX_LR 0.02"))
        env = {"ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": "test-key"}
        code, output = finish(start(project, run_dataset, "--agent", "claude", "--max-trials", "5", **env),
                              timeout=300)
        requests = [json.dumps(body) for body in server.requests]
    assert code == 0, output
    records = check_records_and_git(project, "t")
    statuses = [(r.trial, r.status, r.repair_attempt) for r in records]
    assert statuses[:4] == [(0, "keep", 0), (1, "keep", 0), (2, "discard", 0), (3, "crash", 0)], statuses
    assert statuses[4][0] == 4 and statuses[4][1] in ("keep", "discard") and statuses[4][2] == 1, statuses
    assert "deliberate crash in the proposal" in records[3].failure_reason
    # the repair was asked with the crash's tail in its context
    assert any("deliberate crash in the proposal" in body for body in requests[-2:])
    assert [r.description for r in records[1:]] == ["Raise MATRIX_LR to 0.03", "Lower MATRIX_LR to 0.0001",
                                                    "Add an early exit", "Repair: remove the exit, MATRIX_LR 0.02"]
    assert all(r.tokens["input"] == 2100 and r.cost_usd > 0 for r in records[1:])
    assert "run t finished: reached --max-trials 5" in output
