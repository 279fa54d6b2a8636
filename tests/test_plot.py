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
