"""The records on disk: strict JSON that any parser reads, and each trial's own record.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from autoresearch import atomic, ledger


def strict_loads(text: str) -> object:
    """A parser as strict as Node's JSON.parse: NaN and Infinity are not JSON."""
    def refuse(name: str) -> object:
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def record_with_non_finite_numbers() -> ledger.TrialRecord:
    return ledger.TrialRecord(trial=3, status=ledger.DISCARD, description="x", parent="a", commit="b",
                              started_at="t0", ended_at="t1", val_bpb=1.25, claimed_val_bpb=float("nan"),
                              claimed_training_seconds=float("inf"),
                              extra={"claimed": {"val_bpb": "nan"}, "runs": [{"val_bpb": float("-inf")}]})


def test_trials_jsonl_is_strict_json_with_null_for_nan(tmp_path: Path) -> None:
    ledger.append_trial(tmp_path, record_with_non_finite_numbers())
    line = (tmp_path / ledger.TRIALS_FILE).read_text().splitlines()[0]
    payload = strict_loads(line)
    assert payload["claimed_val_bpb"] is None and payload["claimed_training_seconds"] is None
    assert payload["extra"]["runs"] == [{"val_bpb": None}] and payload["val_bpb"] == 1.25
    assert ledger.read_trials(tmp_path).records[0].claimed_val_bpb is None


def test_run_json_and_trial_files_are_strict_json(tmp_path: Path) -> None:
    ledger.write_run_state(tmp_path, {"best": {"val_bpb": float("nan")}, "noise_floor": {"std": math.inf}})
    assert strict_loads((tmp_path / ledger.RUN_FILE).read_text()) == {"best": {"val_bpb": None},
                                                                      "noise_floor": {"std": None}}
    ledger.write_trial_file(tmp_path, record_with_non_finite_numbers(), in_progress=False, settings={"budget": 5})
    assert strict_loads((tmp_path / ledger.TRIAL_RECORD_FILE).read_text())["record"]["claimed_val_bpb"] is None


def test_a_trial_file_round_trips_and_a_damaged_one_is_no_evidence(tmp_path: Path) -> None:
    record = record_with_non_finite_numbers()
    ledger.write_trial_file(tmp_path, record, in_progress=True, settings={"budget": 20.0, "seq_len": 64})
    back = ledger.read_trial_file(tmp_path)
    assert back is not None and back.in_progress and back.settings == {"budget": 20.0, "seq_len": 64}
    assert (back.record.trial, back.record.status, back.record.val_bpb) == (3, "discard", 1.25)
    (tmp_path / ledger.TRIAL_RECORD_FILE).write_text('{"record": {"trial": 3, "sta')
    assert ledger.read_trial_file(tmp_path) is None


def test_settings_survive_a_lost_run_json_through_the_newest_trial_file(tmp_path: Path) -> None:
    for number, budget in ((0, 20.0), (1, 20.0)):
        record = ledger.TrialRecord(trial=number, status="keep", description="", parent="", commit="",
                                    started_at="", ended_at="")
        ledger.write_trial_file(tmp_path / f"trial-{number:04d}", record, in_progress=False,
                                settings={"budget": budget, "trial_seen": number})
    assert ledger.recorded_settings(tmp_path) == {"budget": 20.0, "trial_seen": 1}
    ledger.write_run_state(tmp_path, {"config": {"budget": 7.0}})
    assert ledger.recorded_settings(tmp_path) == {"budget": 7.0}


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_strict_dumps_never_writes_a_non_finite_literal(value: float) -> None:
    text = atomic.strict_json_dumps({"a": [value, {"b": (value, 1.5)}]})
    assert "NaN" not in text and "Infinity" not in text
    assert strict_loads(text) == {"a": [None, {"b": [None, 1.5]}]}
