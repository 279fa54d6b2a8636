"""The issue-10 benchmarks run end to end at a tiny size and report what they measure (no timing is asserted).

bench/bench_scheduler.py runs a real (tiny) night through the loop in a subprocess; bench/bench_statistics.py
replays simulated nights through History and decide. The expectations follow from how the runs are set
up (the trials a night records, a budget every run sleeps, objectives whose true gains have one sign),
not from the scripts' own arithmetic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def bench(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(REPO_ROOT / "bench" / script), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_the_scheduler_bench_runs_a_night_through_the_loop_and_measures_it(tmp_path: Path) -> None:
    out = tmp_path / "scheduler.json"
    guard = ["--no-guard-package"] if os.environ.get("AUTORESEARCH_TEST_GUARD_PACKAGE") == "0" else []
    result = bench("bench_scheduler.py", "--trials", "2", "--budget", "0.2", "--noise-runs", "1",
                   "--agent-means", "0.5", "--workers", "1,4", "--json", str(out), *guard)
    assert result.returncode == 0, result.stderr
    for words in ("training share", "trials per hour (scaled to a 300 s budget)", "proposal phase",
                  "proposals per hour (scaled)", "wall time: training",
                  "workers 4: not measured: the serial executor runs 1 lane"):
        assert words in result.stdout, (words, result.stdout)
    report = json.loads(out.read_text())
    assert report["not_measured_workers"] == [4]
    (night,) = report["measurements"]
    assert (night["executor"], night["workers"], night["agent_mean_fraction"]) == ("serial", 1, 0.5)
    assert night["trials"] == 4 and night["proposals"] == 2  # the baseline, one noise-floor run, two proposals
    assert sum(night["statuses"].values()) == 4 and night["statuses"]["keep"] >= 1  # the baseline at least
    # every run of train.py sleeps the 0.2 s budget: at least four runs' worth of training was seen
    assert night["training_share"] * night["wall_seconds"] >= 4 * 0.2
    assert 0 < night["training_share"] < 1 and night["training_share_per_worker"] == [night["training_share"]]
    assert abs(sum(night["split"].values()) - 1.0) < 1e-6
    assert night["split"]["agent"] > 0 and night["split"]["evaluation"] > 0


def test_the_scheduler_bench_refuses_bad_settings_in_one_line() -> None:
    for args in (["--workers", "two"], ["--budget", "0"], ["--executor", "concurrent"]):
        result = bench("bench_scheduler.py", *args)
        assert result.returncode != 0
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr


def statistics(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "statistics.json"
    result = bench("bench_statistics.py", "--nights", "3", "--proposals", "6", "--json", str(out), *args)
    assert result.returncode == 0, result.stderr
    for words in ("false keeps per night", "true keeps per night", "true gain reached", "training runs per night",
                  "nights with a false keep"):
        assert words in result.stdout, (words, result.stdout)
    return json.loads(out.read_text())


def test_the_statistics_bench_reports_the_defaults_and_variants(tmp_path: Path) -> None:
    report = statistics(tmp_path, "--workers", "1,4")
    names = [summary["rules"] for summary in report["summaries"]]
    assert names[0] == "--noise-runs 4 --noise-sigmas 2 --confirm-runs 1 --quarantine-factor 10 --quarantine-floor 0.01"
    assert len(names) == 5 and names[-1].startswith("keep any improvement")
    assert report["not_simulated_workers"] == [4]
    defaults = report["summaries"][0]
    assert (defaults["executor"], defaults["workers"], defaults["nights"], defaults["proposals"]) == ("serial", 1, 3, 6)
    # the baseline, four noise-floor runs and six first runs, plus any confirmation runs
    assert defaults["runs_per_night"][0] >= 11
    assert report["summaries"][-1]["runs_per_night"] == [7.0, 0.0]  # no noise floor, no confirmation: 1 + 6


def test_only_harmful_proposals_are_never_true_keeps_and_only_helpful_ones_never_false_keeps(tmp_path: Path) -> None:
    harmful = statistics(tmp_path, "--null-share", "0", "--harmful-share", "1")
    for summary in harmful["summaries"]:
        assert summary["true_keeps_per_night"][0] == 0
        assert summary["true_gain_bpb"][0] <= 0  # a kept harmful change only loses
    helpful = statistics(tmp_path, "--null-share", "0", "--harmful-share", "0", "--helpful-mean", "50")
    for summary in helpful["summaries"]:
        assert summary["false_keeps_per_night"][0] == 0 and summary["nights_with_a_false_keep"] == 0
        assert summary["true_keeps_per_night"][0] >= 1 and summary["true_gain_bpb"][0] > 0


def test_the_statistics_bench_refuses_bad_settings_in_one_line() -> None:
    for args in (["--nights", "0"], ["--harmful-share", "0.8"], ["--workers", "0"]):
        result = bench("bench_statistics.py", *args)
        assert result.returncode != 0
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
