"""Run settings: continuing a run keeps the settings its scores were measured under."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoresearch import ledger
from autoresearch.errors import UserError
from autoresearch.runconfig import load_config


def recorded_run(project: Path, tag: str, **config: object) -> None:
    ledger.write_run_state(project / "runs" / tag, {"tag": tag, "config": config})


def test_a_resumed_run_takes_its_recorded_measurement_settings(tmp_path: Path) -> None:
    data = tmp_path / "data" / "tiny"
    recorded_run(tmp_path, "night", budget=20.0, seq_len=128, eval_tokens=4096, device="cpu", seed=7,
                 data_dir=str(data), dataset="tiny")
    config = load_config({"tag": "night"}, project_dir=tmp_path, environ={})
    assert (config.budget, config.seq_len, config.eval_tokens, config.device, config.seed) == (20.0, 128, 4096, "cpu", 7)
    assert config.data_dir == data and config.dataset == "tiny"
    # a setting that does not change what a score means may change between sessions
    assert load_config({"tag": "night", "max_trials": 9}, project_dir=tmp_path, environ={}).max_trials == 9


@pytest.mark.parametrize("flags, named", [({"budget": 30}, "--budget"), ({"seq_len": 256}, "--seq-len"),
                                          ({"dataset": "other"}, "--dataset")])
def test_a_resumed_run_refuses_settings_that_would_make_its_scores_incomparable(
        tmp_path: Path, flags: dict, named: str) -> None:
    recorded_run(tmp_path, "night", budget=20.0, seq_len=128, data_dir=str(tmp_path / "data" / "tiny"))
    with pytest.raises(UserError, match=f"^{named}: run night was started with"):
        load_config({"tag": "night", **flags}, project_dir=tmp_path, environ={})


def test_a_new_run_is_not_held_to_another_runs_settings(tmp_path: Path) -> None:
    recorded_run(tmp_path, "night", budget=20.0)
    assert load_config({"tag": "other", "budget": 30}, project_dir=tmp_path, environ={}).budget == 30


def test_a_corrupt_run_json_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "night"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text("{")
    with pytest.raises(UserError, match="run.json is unreadable"):
        load_config({"tag": "night"}, project_dir=tmp_path, environ={})
    (run_dir / "run.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="does not hold a run's state"):
        ledger.read_run_state(run_dir)


def test_a_record_line_that_is_json_but_not_a_record_counts_as_torn(tmp_path: Path) -> None:
    record = ledger.TrialRecord(trial=0, status="keep", description="baseline", parent="a", commit="a",
                                started_at="t", ended_at="t", val_bpb=1.0)
    ledger.append_trial(tmp_path, record)
    with open(tmp_path / ledger.TRIALS_FILE, "a") as handle:
        handle.write("null\n" + json.dumps([1]) + "\n")
    log = ledger.read_trials(tmp_path)
    assert [r.trial for r in log.records] == [0] and log.torn_lines == [2, 3]


def test_results_tsv_is_rebuilt_from_the_records(tmp_path: Path) -> None:
    records = [ledger.TrialRecord(trial=n, status="discard", description=f"idea {n}", parent="a", commit=f"c{n}" * 4,
                                  started_at="t", ended_at="t", val_bpb=1.0 + n) for n in range(3)]
    ledger.append_trial(tmp_path, records[0])  # a kill lost the rows of trials 1 and 2
    ledger.rewrite_results(tmp_path, records)
    lines = (tmp_path / ledger.RESULTS_FILE).read_text().splitlines()
    assert lines[0] == ledger.RESULTS_HEADER.strip() and len(lines) == 4 and lines[3].endswith("discard\tidea 2")


def test_tool_autoresearch_without_a_toml_reader_is_one_line_not_silently_ignored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.10 has no tomllib: the settings must not be dropped without a word."""
    (tmp_path / "pyproject.toml").write_text("[tool.autoresearch]\nbudget = 42\n")
    assert load_config({}, project_dir=tmp_path, environ={}).budget == 42  # read where a reader exists
    monkeypatch.setitem(__import__("sys").modules, "tomllib", None)  # as on 3.10 ...
    monkeypatch.setitem(__import__("sys").modules, "tomli", None)  # ... without tomli installed
    with pytest.raises(UserError, match=r"cannot be read for \[tool.autoresearch\].*pip install tomli"):
        load_config({}, project_dir=tmp_path, environ={})


def test_tomli_is_a_dependency_where_tomllib_is_missing() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "tomli>=1.1; python_version < '3.11'" in project["project"]["dependencies"]
