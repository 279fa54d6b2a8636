"""`autoresearch demo`: the README's first command, run for real in a copy of this repository.

The end-to-end test copies the project's tracked files into a fresh git repository, as a user's
clone, and runs `autoresearch demo` there as a subprocess with a short budget: the sample corpus is
prepared, a night of real trials runs on the CPU with the offline agent, and the report, the plot
and report.md come out, while the user's checkout stays as it was.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from run_fixtures import check_records_and_git, git, make_project

from autoresearch import cli, demo, knobs, ledger


def copy_of_this_project(root: Path) -> Path:
    """A fresh git repository holding this project's tracked files, as a user's clone would."""
    project = root / "clone"
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, check=True, capture_output=True,
                           text=True).stdout.split("\0")
    for name in filter(None, names):
        source = REPO_ROOT / name
        if source.is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, project / name)
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "-c", "user.name=Tester", "-c", "user.email=t@example.com", "commit", "-q", "-m", "clone")
    return project


@pytest.mark.slow
def test_the_demo_runs_a_short_night_and_reports_it(tmp_path: Path) -> None:
    project = copy_of_this_project(tmp_path)
    head_before = git(project, "rev-parse", "HEAD")
    train_before = (project / "train.py").read_text()
    cache = tmp_path / "cache"
    # PYTHONSAFEPATH: import the installed package, not the copy's autoresearch/ in the working directory
    env = {**os.environ, "AUTORESEARCH_CACHE_DIR": str(cache), "PYTHONSAFEPATH": "1",
           "AUTORESEARCH_AGENT": "claude", "AUTORESEARCH_DEVICE": "cuda"}  # the demo ignores these
    result = subprocess.run([sys.executable, "-m", "autoresearch", "demo", "--trials", "2", "--budget", "2"],
                            cwd=project, env=env, capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output

    runs = [path for path in (project / "runs").iterdir() if path.name.startswith("demo-")]
    assert len(runs) == 1
    run_dir = runs[0]
    tag = run_dir.name
    assert f"autoresearch report · {tag} · finished" in output  # the report's headline
    assert "val_bpb" in output and "noise floor" in output
    assert "ANTHROPIC_API_KEY=sk-ant-... autoresearch run --hours 8" in output  # what to do next
    png = (run_dir / "progress.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    markdown = (run_dir / "report.md").read_text()
    assert tag in markdown.splitlines()[0] and "](progress.png)" in markdown

    records = check_records_and_git(project, tag)
    state = json.loads((run_dir / "run.json").read_text())
    extra_runs = state["config"].get("noise_runs", 0)
    assert len(records) == 1 + extra_runs + 2  # the baseline, its noise-floor run, two proposals
    baseline = records[0]
    assert baseline.status == ledger.KEEP and baseline.val_bpb is not None
    assert 0 < baseline.val_bpb < 3.0  # it learned: the untrained model scores 3.17 on this corpus
    baseline_knobs = knobs.read_knobs((run_dir / "trial-0000" / "train.py").read_text())
    assert {name: baseline_knobs[name].value for name in demo.DEMO_KNOBS} == demo.DEMO_KNOBS
    assert state["config"]["agent"] == "offline" and state["config"]["device"] == "cpu"
    assert Path(state["config"]["data_dir"]).name == demo.DEMO_DATASET
    assert (cache / "datasets" / demo.DEMO_DATASET / "manifest.json").is_file()

    # The user's checkout: still on main at the same commit, train.py as it was, nothing to commit.
    assert git(project, "rev-parse", "HEAD") == head_before
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert (project / "train.py").read_text() == train_before
    assert git(project, "status", "--porcelain") == ""


def test_the_demo_refuses_a_dirty_train_py_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = make_project(tmp_path)
    (project / "train.py").write_text((project / "train.py").read_text() + "\n# an experiment\n")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--project-dir", str(project)])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err == ("error: train.py has uncommitted changes; commit or stash them before `autoresearch demo` "
                   "(the demo runs on a branch from your last commit)")
    assert not (project / "runs").exists()
    assert not (Path(os.environ["AUTORESEARCH_CACHE_DIR"]) / "datasets").exists()  # refused before preparing


@pytest.mark.parametrize("setup, message", [
    ("no git", "is not a git repository"),
    ("untracked prepare.py", "error: prepare.py is not committed; commit it before `autoresearch demo`"),
])
def test_the_demo_needs_a_committed_project(setup: str, message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    if setup == "no git":
        project = tmp_path
    else:
        project = make_project(tmp_path)
        git(project, "rm", "-q", "--cached", "prepare.py")
        git(project, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "untrack")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--project-dir", str(project)])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_bad_trials_or_budget_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = make_project(tmp_path)
    for args, message in ((["--trials", "0"], "error: --trials must be at least 1 (got 0)"),
                          (["--budget", "-1"], "error: --budget must be greater than 0 (got -1)")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["demo", "--project-dir", str(project), *args])
        assert exit_info.value.code != 0
        assert capsys.readouterr().err.strip() == message


def test_the_demo_config_is_a_shrunk_real_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project(tmp_path)
    monkeypatch.setenv("AUTORESEARCH_AGENT", "claude")
    monkeypatch.setenv("AUTORESEARCH_TIME_BUDGET", "300")
    config = demo.demo_config(project, tmp_path / "data", "demo-x", trials=4, budget=7.0)
    assert (config.agent, config.device, config.budget, config.tag) == ("offline", "cpu", 7.0, "demo-x")
    assert config.baseline_knobs == demo.DEMO_KNOBS and config.baseline_knobs is not demo.DEMO_KNOBS
    assert (config.seq_len, config.eval_tokens) == (demo.DEMO_SEQ_LEN, demo.DEMO_EVAL_TOKENS)
    assert config.data_dir == (tmp_path / "data").resolve()
    assert (config.noise_runs, config.confirm_runs) == (demo.DEMO_NOISE_RUNS, demo.DEMO_CONFIRM_RUNS)
    assert config.max_trials == 1 + 4  # the baseline and four proposals; noise-floor runs are not counted


def test_demo_tags_are_fresh(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    now = _dt.datetime(2026, 1, 2, 3, 4, 5)
    assert demo.demo_tag(project, now) == "demo-20260102-030405"
    (project / "runs" / "demo-20260102-030405").mkdir(parents=True)
    git(project, "branch", "autoresearch/demo-20260102-030405-2")
    assert demo.demo_tag(project, now) == "demo-20260102-030405-3"


def test_the_help_states_the_defaults_the_demo_uses() -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, ["demo", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert f"(default: {demo.DEFAULT_TRIALS})" in result.output
    assert f"(default: {demo.DEFAULT_BUDGET:g})" in result.output
