"""The hidden holdout on a real tiny run: scored at the end of the run, and again by `autoresearch eval`.

Real training, real evaluator subprocesses, a real git project; the agent is scripted. The flag
("val improved, holdout did not") on known numbers is tested with an evaluator double in
tests/test_adversarial.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_fixtures import ScriptedProposer, check_records_and_git, make_project, sealed_copy, set_knob

from autoresearch import cli, holdout
from autoresearch.loop import run_night
from autoresearch.runconfig import load_config


@pytest.mark.slow
def test_a_run_scores_baseline_and_best_on_holdout_and_eval_repeats_it(
        tmp_path: Path, tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = sealed_copy(tiny_dataset, tmp_path / "data")
    project = make_project(tmp_path)
    config = load_config({"budget": 20, "tag": "t", "data_dir": str(data), "device": "cpu", "seq_len": 64,
                          "eval_tokens": 2048, "noise_runs": 0, "confirm_runs": 0, "quarantine_factor": 0,
                          "max_trials": 2}, project_dir=project, environ={})
    outcome = run_night(config, proposer=ScriptedProposer([set_knob("MATRIX_LR", 0.03)]), handle_signals=False)
    baseline, best = check_records_and_git(project, "t")
    assert best.status == "keep" and best.val_bpb < baseline.val_bpb

    # scored at the end of the run: records, run.json and the outcome agree
    summary = outcome.holdout
    assert summary["baseline_trial"] == 0 and summary["best_trial"] == 1
    assert (baseline.holdout_bpb, best.holdout_bpb) == (summary["baseline"], summary["best"])
    assert summary["baseline"] > 0 and summary["best"] > 0 and summary["baseline"] != baseline.val_bpb
    run_dir = project / "runs" / "t"
    assert json.loads((run_dir / "run.json").read_text())["holdout"]["best"] == summary["best"]
    assert json.loads((run_dir / "trial-0001" / "holdout.json").read_text())["split"] == "holdout"
    expected_flag = holdout.flag(baseline.val_bpb, best.val_bpb, summary["baseline"], summary["best"])
    assert summary["flag"] == expected_flag

    # on demand, by tag: the same numbers (CPU scoring is deterministic), val and holdout side by side
    cli.main(["eval", "t", "--runs-dir", str(project / "runs")])
    out = capsys.readouterr().out
    assert out.startswith("run t: baseline and best scored on the holdout split now")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:4]}
    assert rows["baseline"][4:6] == [f"{baseline.val_bpb:.6f}", f"{summary['baseline']:.6f}"]
    assert rows["best"][4:6] == [f"{best.val_bpb:.6f}", f"{summary['best']:.6f}"]
    assert "change" in out and (("FLAG: val improved" in out) == (expected_flag is not None))

    # on demand, by commit (a prefix): that trial's train.py with its kept weights
    cli.main(["eval", best.commit[:10], "--runs-dir", str(project / "runs")])
    out = capsys.readouterr().out
    assert out.startswith(f"commit {best.commit[:7]}: trial 1 of run t")
    assert f"{summary['best']:.6f}" in out and f"{best.val_bpb:.6f}" in out
    check_records_and_git(project, "t")  # rewriting holdout_bpb left the records whole
