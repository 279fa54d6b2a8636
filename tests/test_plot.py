"""The progress plot is a real PNG of a sensible size, written atomically, for full and empty runs."""

from __future__ import annotations

import struct

from report_fixtures import write_night, write_reference_tsv, write_run_json

from autoresearch import plot
from autoresearch import report as reports

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_progress_plot_of_a_night(tmp_path):
    report = reports.load_run(write_night(tmp_path / "runs"))
    path = plot.save_progress_plot(report, report.plot_path)
    assert path == tmp_path / "runs" / "night" / "progress.png"
    width, height = png_size(path)
    expected = (plot.FIGURE_SIZE[0] * plot.DPI, plot.FIGURE_SIZE[1] * plot.DPI)
    assert (width, height) == (round(expected[0]), round(expected[1]))
    assert 20_000 < path.stat().st_size < 2_000_000  # points, a step line, labels: not a blank canvas
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".progress-")] == []  # no temp left


def test_progress_plot_without_scores_and_from_a_tsv(tmp_path):
    blank = tmp_path / "runs" / "blank"
    write_run_json(blank, tag="blank", status="running")
    empty = plot.save_progress_plot(reports.load_run(blank), tmp_path / "empty.png")
    tsv_report = reports.load_run(write_reference_tsv(tmp_path / "ref"))
    from_tsv = plot.save_progress_plot(tsv_report, tmp_path / "tsv.png")
    assert png_size(empty) == png_size(from_tsv)
    assert empty.read_bytes() != from_tsv.read_bytes()


def test_shortened_labels():
    assert plot._shorten("a  b\nc") == "a b c"
    long = plot._shorten("x" * 100)
    assert len(long) == plot.LABEL_CHARACTERS and long.endswith("…")


def test_many_kept_trials_label_only_the_biggest_steps():
    from types import SimpleNamespace

    kept = [SimpleNamespace(trial=0, delta=None)]
    kept += [SimpleNamespace(trial=n, delta=-0.001 * (n % 7 + 1)) for n in range(1, 60)]
    labelled = plot._labelled(kept, baseline_trial=0)
    assert len(labelled) == plot.MAX_LABELS and labelled[0].trial == 0
    biggest = {t.trial for t in kept[1:] if t.delta <= -0.006 + 1e-12}
    assert biggest <= {t.trial for t in labelled}  # every step of 6 or 7 thousandths is labelled
    assert all(t.delta <= -0.005 + 1e-12 for t in labelled[1:])
    assert plot._labelled(kept[:5], baseline_trial=0) == kept[:5]


def nothing_kept(runs_dir, discards, noise_floor=None):
    from report_fixtures import PROGRAM_A, _write_rows

    run_dir = runs_dir / "flat"
    write_run_json(run_dir, tag="flat", status="finished", noise_floor=noise_floor)
    rows = [(0, "keep", "baseline", 1.0, None, PROGRAM_A, None)]
    rows += [(n, "discard", f"change {n}", value, None, PROGRAM_A, None) for n, value in enumerate(discards, start=1)]
    rows.append((len(rows), "crash", "explode", None, None, PROGRAM_A, "loss is nan"))
    _write_rows(run_dir, rows, day="2026-01-01")
    return reports.load_run(run_dir)


def test_a_night_with_nothing_kept_draws_its_discards_as_points(tmp_path):
    discards = [1.004, 1.03, 1.06, 1.08, 1.1, 0.97]  # within +-10 % of the baseline, nothing kept
    report = nothing_kept(tmp_path / "runs", discards)
    bottom, top = plot.y_range(report, [t.val_bpb for t in report.trials if t.val_bpb is not None])
    assert bottom == 0.97 and top == 1.1  # every discard a point, none clamped
    above_only = nothing_kept(tmp_path / "above", [1.004, 1.02, 1.05, 1.07, 1.09, 1.1])
    assert plot.y_range(above_only, [1.0, 1.004, 1.02, 1.05, 1.07, 1.09, 1.1])[1] == 1.1
    # A diverged trial at twice the baseline is an outlier: clamped, so the rest keep their scale.
    diverged = nothing_kept(tmp_path / "diverged", [*discards, 2.0])
    bottom, top = plot.y_range(diverged, [1.0, *discards, 2.0])
    assert 1.1 <= top < 1.5
    # The noise floor's keep bar is inside the axis, and the plot draws it.
    floor = {"seeds": [42, 43], "val_bpbs": [1.0, 1.01], "mean": 1.005, "std": 0.007, "keep_threshold": 0.014}
    measured = nothing_kept(tmp_path / "measured", discards, noise_floor=floor)
    assert plot.keep_bar(measured) == (1.005, 1.005 - 0.014)
    assert plot.y_range(measured, [1.0, *discards])[0] == 0.97
    tight = nothing_kept(tmp_path / "tight", [1.002, 1.003], noise_floor=floor)
    assert plot.y_range(tight, [1.0, 1.002, 1.003]) == (1.005 - 0.014, 1.003)  # the bar sets the bottom
    assert plot.keep_bar(report) is None  # no noise floor, no bar
    path = plot.save_progress_plot(measured, tmp_path / "measured.png")
    assert png_size(path) == png_size(plot.save_progress_plot(report, tmp_path / "plain.png"))
    assert path.read_bytes() != (tmp_path / "plain.png").read_bytes()
