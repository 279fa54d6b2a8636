"""The report's numbers: counts, baseline -> best, timings, grouping, program.md stretches, JSON."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from report_fixtures import (
    PROGRAM_A,
    PROGRAM_B,
    write_night,
    write_reference_tsv,
    write_run_json,
    write_running,
)

from autoresearch import ledger
from autoresearch import report as reports
from autoresearch.errors import UserError

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("AUTORESEARCH_UPDATE_GOLDEN") == "1"


def normalized_json(report: reports.RunReport) -> dict:
    document = reports.to_json(report)
    document["run_dir"] = "<run_dir>"
    return document


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if UPDATE_GOLDEN:
        path.write_text(actual)
    assert path.exists(), f"{path} is missing; run with AUTORESEARCH_UPDATE_GOLDEN=1 to write it"
    assert actual == path.read_text(), f"{name} differs from its golden file (AUTORESEARCH_UPDATE_GOLDEN=1)"


# --- A finished night ---------------------------------------------------------------------------------


def test_night_headline(tmp_path):
    report = reports.load_run(write_night(tmp_path / "runs"))
    assert report.tag == "night" and report.source == "run" and report.status == "finished"
    c = report.counts
    assert (c.trials, c.kept, c.discarded, c.crashed, c.crash, c.timeout, c.rejected, c.interrupted) == (
        12, 3, 3, 3, 2, 1, 2, 1)
    assert (report.baseline_val_bpb, report.best_val_bpb, report.best_trial) == (1.0, 0.98, 11)
    assert report.gain == pytest.approx(0.02) and report.gain_pct == pytest.approx(2.0)
    assert (report.baseline_holdout_bpb, report.best_holdout_bpb) == (1.01, 0.991)
    assert report.noise_floor["keep_threshold"] == 0.0024
    time = report.time
    assert time.wall_seconds == 7200.0  # run.json created_at -> updated_at
    assert time.training_seconds == 11 * 300.0  # 13 records, the 2 rejected ones never trained
    assert time.evaluation_seconds == 7 * 20.0 and time.agent_seconds == 12 * 40.0
    assert time.other_seconds == pytest.approx(7200 - 3300 - 140 - 480)
    assert time.training_share == pytest.approx(3300 / 7200)
    assert report.tokens == {"input": 12 * 120_000, "output": 12 * 4_000, "cache_read": 12 * 90_000,
                             "cache_write": 12 * 8_000}
    assert report.cost_usd == pytest.approx(3.0)
    assert report.warnings == [] and report.pending_trials == []


def test_kept_changes_in_order_with_deltas(tmp_path):
    report = reports.load_run(write_night(tmp_path / "runs"))
    assert [k.trial for k in report.kept] == [2, 7, 11]
    assert [round(k.delta, 6) for k in report.kept] == [-0.01, -0.005, -0.005]
    assert report.kept[-1].holdout_bpb == 0.991
    assert [t.best_val_bpb for t in report.trials][-3:] == [0.985, 0.98, 0.98]


def test_failures_grouped_by_normalized_reason(tmp_path):
    report = reports.load_run(write_night(tmp_path / "runs"))
    groups = [(g.kind, g.count, g.trials) for g in report.failures]
    # the two OOMs differ in line number, path and size but group together; so do the two rejections
    assert groups == [("crashed", 2, [3, 4]), ("crashed", 1, [5]), ("rejected", 2, [6, 9])]
    assert report.failures[0].example.startswith("torch.OutOfMemoryError: CUDA out of memory")
    assert report.failures[0].reason == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate N GiB"


def test_program_md_stretches(tmp_path):
    report = reports.load_run(write_night(tmp_path / "runs"))
    stretches = [(p.sha256, p.first_trial, p.last_trial, p.trials, p.kept) for p in report.programs]
    assert stretches == [(PROGRAM_A[:12], 0, 6, 7, 1), (PROGRAM_B[:12], 7, 12, 6, 2)]
    assert report.programs[0].best_delta == pytest.approx(-0.01)
    assert report.programs[0].gain == pytest.approx(0.01)  # 1.00 -> 0.99
    assert report.programs[1].gain == pytest.approx(0.01)  # 0.99 -> 0.98


@pytest.mark.parametrize("reason, expected", [
    ("Traceback (most recent call last):\n  File \"/x/train.py\", line 3\nValueError: bad shape (4, 8)",
     "ValueError: bad shape (N, N)"),
    ("edit touched /home/me/project/prepare.py at commit 1a2b3c4d\nmore detail",
     "edit touched <path> at commit <hash>"),
    (None, "(no reason recorded)"),
    ("   \n\n", "(no reason recorded)"),
])
def test_normalize_reason(reason, expected):
    assert reports.normalize_reason(reason) == expected


def test_json_matches_golden_and_round_trips(tmp_path):
    report = reports.load_run(write_night(tmp_path / "runs"))
    document = normalized_json(report)
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    check_golden("night.json", text)
    assert json.loads(text) == document
    for other in (write_running(tmp_path / "runs"), write_reference_tsv(tmp_path / "ref")):
        document = reports.to_json(reports.load_run(other))
        assert json.loads(json.dumps(document, allow_nan=False)) == document


# --- A run still going, a results.tsv alone -----------------------------------------------------------------


def test_running_run_reports_pending_trial_and_absent_measurements(tmp_path):
    report = reports.load_run(write_running(tmp_path / "runs"))
    assert report.status == "running"
    assert report.pending_trials == [4]
    assert report.noise_floor is None
    assert report.baseline_holdout_bpb is None and report.best_holdout_bpb is None
    assert (report.best_trial, report.best_val_bpb) == (2, 2.4)
    assert report.counts.crashed == 1 and report.counts.trials == 3


def test_reference_results_tsv_alone(tmp_path):
    path = write_reference_tsv(tmp_path / "ref")
    for target in (path, path.parent):
        report = reports.load_run(target)
        assert report.source == "results.tsv"
        c = report.counts
        assert (c.trials, c.kept, c.discarded, c.crashed) == (4, 2, 1, 1)
        assert (report.baseline_val_bpb, report.best_val_bpb) == (0.9979, 0.9901)
        assert report.best_commit == "e5f6a7b"
        assert [k.description for k in report.kept] == ["increase LR to 0.04", "add value embeddings"]
        assert report.trials[3].val_bpb is None  # the crash's 0.000000 is no score
        assert report.time.wall_seconds is None and report.time.training_seconds is None


# --- Bad and partial input ---------------------------------------------------------------------------------


def test_torn_last_line_is_warned_once_and_the_rest_reported(tmp_path):
    run_dir = write_night(tmp_path / "runs")
    with (run_dir / ledger.TRIALS_FILE).open("a") as handle:
        handle.write('{"trial": 13, "status": "disc')
    report = reports.load_run(run_dir)
    assert report.counts.trials == 12
    assert len(report.warnings) == 1 and "line 14" in report.warnings[0]


def test_empty_run_is_reported_with_a_warning(tmp_path):
    run_dir = tmp_path / "runs" / "blank"
    write_run_json(run_dir, tag="blank", status="running", created_at="2026-01-01T00:00:00+00:00")
    report = reports.load_run(run_dir)
    assert report.counts.trials == 0 and report.best_val_bpb is None and report.trials == []
    assert report.warnings == ["run 'blank' has no trials recorded yet"]


def test_sparse_records_and_unknown_fields_are_tolerated(tmp_path):
    run_dir = tmp_path / "runs" / "sparse"
    run_dir.mkdir(parents=True)
    lines = [
        {"trial": 0, "status": "keep", "description": "baseline", "parent": "", "commit": "a",
         "started_at": "", "ended_at": "", "val_bpb": 3.0, "gpu": "h100"},
        {"trial": 1, "status": "keep", "description": "x", "parent": "a", "commit": "b", "started_at": "",
         "ended_at": "", "val_bpb": 2.9, "tokens": {"input": 5}, "cost_usd": None},
        {"trial": 1, "status": "discard", "description": "x, re-run after a resume", "parent": "a",
         "commit": "c", "started_at": "", "ended_at": "", "val_bpb": 3.1},
        {"trial": None, "status": None, "description": None, "parent": "", "commit": "", "started_at": "",
         "ended_at": ""},
    ]
    (run_dir / ledger.TRIALS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = reports.load_run(run_dir)
    assert report.trials[0].extra == {"gpu": "h100"}
    assert report.counts.trials == 1 and report.counts.discarded == 1  # the last record of trial 1 wins
    assert report.trials[1].delta == pytest.approx(0.1)  # computed: the record carries none
    assert report.status == "unknown" and report.time.wall_seconds is None
    assert report.warnings == ["1 record(s) without a trial number were left out"]
    json.dumps(reports.to_json(report), allow_nan=False)


def test_find_run_picks_the_latest_and_explains_misses(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(UserError, match="no runs under"):
        reports.find_run(runs, None)
    write_night(runs)
    write_running(runs)  # updated 2026-01-03: later than the night
    assert reports.find_run(runs, None).name == "still-going"
    assert reports.find_run(runs, "night") == runs / "night"
    with pytest.raises(UserError, match="no run 'nope'.*known runs: night, still-going"):
        reports.find_run(runs, "nope")
    with pytest.raises(UserError, match="does not exist"):
        reports.find_run(runs, str(tmp_path / "missing" / "results.tsv"))


# --- The cumulative diff ---------------------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_cumulative_diff_from_git(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    _git(project, "init", "-q")
    _git(project, "config", "user.email", "t@example.com")
    _git(project, "config", "user.name", "t")
    (project / "train.py").write_text("DEPTH = 8\nLR = 0.04\n")
    _git(project, "add", "train.py")
    _git(project, "commit", "-qm", "baseline")
    baseline = _git(project, "rev-parse", "HEAD")
    (project / "train.py").write_text("DEPTH = 10\nLR = 0.04\n")
    _git(project, "commit", "-qam", "deeper")
    best = _git(project, "rev-parse", "HEAD")
    run_dir = tmp_path / "runs" / "g"
    write_run_json(run_dir, tag="g", project_dir=str(project), baseline_commit=baseline, status="finished")
    for trial, commit, value in ((0, baseline, 1.0), (1, best, 0.9)):
        record = ledger.TrialRecord(trial=trial, status="keep", description="d", parent="", commit=commit,
                                    started_at="", ended_at="", val_bpb=value)
        ledger.append_trial(run_dir, record)
    diff = reports.cumulative_diff(reports.load_run(run_dir))
    assert diff.startswith("diff --git a/train.py b/train.py")
    assert "-DEPTH = 8\n+DEPTH = 10\n" in diff and "-LR" not in diff


def test_cumulative_diff_falls_back_to_kept_patches(tmp_path):
    report = reports.load_run(write_night(tmp_path / "runs"))  # its project_dir does not exist
    diff = reports.cumulative_diff(report)
    assert diff.index("# trial 2:") < diff.index("# trial 7:") < diff.index("# trial 11:")
    assert "+# RMSNorm before attention" in diff


def test_cost_of_an_unpriced_model_is_reported_as_unknown_not_as_free(tmp_path):
    run_dir = write_night(tmp_path / "runs")
    lines = (run_dir / ledger.TRIALS_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    records[3]["extra"] = {**records[3].get("extra", {}), "cost_unknown": True}
    records[4]["extra"] = {**records[4].get("extra", {}), "cost_unknown": True}
    (run_dir / ledger.TRIALS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    report = reports.load_run(run_dir)
    assert report.cost_unknown_trials == 2
    from autoresearch.render import headline_lines

    usage = dict(headline_lines(report))
    assert any("cost $3.00 + unknown for 2 trials (a model without prices)" in text for text in usage.values())
