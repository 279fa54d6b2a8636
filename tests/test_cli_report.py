"""`autoresearch report` end to end: text, markdown, JSON, --all, --diff, and every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from report_fixtures import write_night, write_reference_tsv, write_run_json, write_running
from test_report import check_golden

from autoresearch import ledger
from autoresearch import report as reports
from autoresearch.cli import main


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    """A runs/ directory with a finished night and a run still going, as the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("NO_COLOR", "1")
    write_night(tmp_path / "runs")
    write_running(tmp_path / "runs")
    return tmp_path / "runs"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as done:
        code = done.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_text_report_of_a_night(runs, capsys):
    code, out, err = cli(capsys, "report", "night", "--diff")
    assert code == 0 and err == ""
    assert "autoresearch report · night · finished (max trials reached)" in out
    assert "12 after the baseline: 3 kept · 3 discarded · 3 crashed (2 crash, 1 timeout) · 2 rejected" in out
    assert "1.000000 → 0.980000  (-0.020000, -2.00%)  best: trial 11" in out
    assert "1.010000 → 0.991000" in out  # holdout
    assert "std 0.001200 over 3 seeds · keep threshold 0.002400" in out
    assert "2h 00m wall · training 55m 00s (46%)" in out
    assert "deeper model: 10 layers | narrower heads" in out
    assert "torch.OutOfMemoryError: CUDA out of memory" in out and "3-4" in out
    assert "aaaaaaaaaaaa" in out and "bbbbbbbbbbbb" in out
    assert "+# RMSNorm before attention" in out  # --diff, from the kept patches
    assert "\x1b[" not in out  # not a terminal: no escape codes
    assert (runs / "night" / "progress.png").stat().st_size > 0


def test_text_report_defaults_to_the_latest_run_and_says_what_is_missing(runs, capsys):
    code, out, _ = cli(capsys, "report", "--no-plot")
    assert code == 0
    assert "still-going · running" in out
    assert "trial 4 (no record yet)" in out
    assert "holdout      not recorded" in out and "noise floor  not measured" in out


def test_markdown_report_matches_golden(runs, capsys):
    code, out, err = cli(capsys, "report", "night", "--format", "md")
    assert code == 0 and err == ""
    path = Path(out.strip())
    assert path == Path("runs") / "night" / "report.md"
    text = path.read_text()
    assert "![progress of night](progress.png)" in text and (path.parent / "progress.png").exists()
    check_golden("night.md", text)


def test_json_report_round_trips_to_the_python_api(runs, capsys):
    code, out, err = cli(capsys, "report", "night", "--format", "json")
    assert code == 0 and err == ""
    document = json.loads(out)
    assert document == reports.to_json(reports.load_run(Path("runs") / "night"))
    assert document["plot"] == "progress.png" and document["schema"] == 1
    code, out, _ = cli(capsys, "report", "night", "-f", "json", "--diff")
    assert "+# RMSNorm before attention" in json.loads(out)["diff"]


def test_all_runs_side_by_side(runs, capsys):
    code, out, _ = cli(capsys, "report", "--all")
    assert code == 0
    assert out.index("night") < out.index("still-going")
    assert "-2.00%" in out and "0.991000" in out and "$3.00" in out and "running" in out
    code, out, _ = cli(capsys, "report", "--all", "--format", "json")
    rows = json.loads(out)["runs"]
    assert [(r["tag"], r["trials"], r["best_val_bpb"]) for r in rows] == [("night", 12, 0.98),
                                                                          ("still-going", 3, 2.4)]


def test_reference_results_tsv_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    path = write_reference_tsv(tmp_path / "ref")
    code, out, _ = cli(capsys, "report", str(path))
    assert code == 0
    assert "4 after the baseline: 2 kept · 1 discarded · 1 crashed" in out
    assert "0.997900 → 0.990100" in out and "add value embeddings" in out
    assert (tmp_path / "ref" / "progress.png").exists()
    code, out, _ = cli(capsys, "report", str(tmp_path / "ref"), "--format", "json", "--no-plot")
    assert json.loads(out)["source"] == "results.tsv"


# --- Bad input: one line, the right exit code, no traceback ------------------------------------------------


def test_no_runs_yet(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "report")
    assert code == 2 and out == ""
    assert err == ("error: no runs under runs/ yet: start one with `autoresearch run`, or pass --runs-dir "
                   "or a results.tsv\n")


def test_unknown_tag(runs, capsys):
    code, out, err = cli(capsys, "report", "nope")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: no run 'nope' under runs/ (known runs: night, still-going)")


def test_unknown_format(runs, capsys):
    code, _, err = cli(capsys, "report", "night", "--format", "yaml")
    assert code == 2 and err == "error: --format 'yaml' is not one of text, md, json\n"


def test_empty_run_reports_what_exists_and_warns(runs, capsys):
    write_run_json(runs / "blank", tag="blank", status="running", updated_at="2026-02-01T00:00:00+00:00")
    code, out, err = cli(capsys, "report")
    assert code == 0
    assert out.startswith("warning: run 'blank' has no trials recorded yet\n")
    assert "0 after the baseline" in out and not (runs / "blank" / "progress.png").exists()
    code, out, err = cli(capsys, "report", "blank", "-f", "json")
    assert code == 0 and err == "warning: run 'blank' has no trials recorded yet\n"
    assert json.loads(out)["counts"]["trials"] == 0


def test_torn_last_line_warns_once(runs, capsys):
    with (runs / "night" / ledger.TRIALS_FILE).open("a") as handle:
        handle.write('{"trial": 13, "status": "kee')
    code, out, err = cli(capsys, "report", "night", "--no-plot")
    assert code == 0 and out.count("did not parse") == 1 and err == ""
    assert "12 after the baseline" in out
    code, out, err = cli(capsys, "report", "night", "--format", "md", "--no-plot")
    assert code == 0 and err.count("\n") == 1 and "line 14 did not parse" in err


def test_a_real_process_prints_one_line_and_no_traceback(tmp_path):
    env = dict(os.environ, COLUMNS="100")
    command = [sys.executable, "-m", "autoresearch", "report", "nope", "--runs-dir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: no run 'nope'") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_the_cli_does_not_import_matplotlib_until_it_draws():
    code = ("import sys, autoresearch.cli, autoresearch.report, autoresearch.plot; "
            "print('matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
