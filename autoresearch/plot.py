"""The progress plot: every trial a point, the running best as a step line, kept trials labelled.

x is the trial number, y is val_bpb (lower is better). Discarded trials are grey, kept ones green
with their (shortened) descriptions; crashes and rejections have no score, so they are marked as
small crosses along the top edge and counted in the legend. Only outliers are clamped to the top of
the axis (drawn as triangles), so one exploding trial does not flatten the rest: a score is ordinary,
and drawn as a point, when it lies within the largest of SPREAD_FACTOR x the baseline-to-best
spread, NOISE_FACTOR x the noise floor's std, RELATIVE_ALLOWANCE x the baseline (above the
baseline), or within ROBUST_SIGMAS robust standard deviations (1.4826 x the median absolute
deviation) of the median score. When the run measured a noise floor, a shaded band from the
baseline's mean down to mean - keep threshold, bounded by a dashed line, shows the bar a trial had
to clear to be kept.

matplotlib is imported inside `save_progress_plot` with the Agg backend, so importing this module
(and starting the CLI) stays fast and no display is needed. The PNG is written to a temporary file
and moved into place, so a reader never sees half an image. What this does not do: pick fonts that
render every script in a description (non-Latin glyphs may show as boxes).
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
from pathlib import Path

from autoresearch.report import RunReport

FIGURE_SIZE = (14.0, 7.0)  # inches
DPI = 110
LABEL_CHARACTERS = 40  # kept-trial descriptions are shortened to this
MAX_LABELS = 24  # with more kept trials, only the biggest steps are labelled
KEPT_COLOR, DISCARD_COLOR, BEST_COLOR = "#2ca02c", "#b0b0b0", "#1f77b4"
CRASH_COLOR, REJECT_COLOR = "#d62728", "#ff7f0e"
NOISE_COLOR = "#9467bd"
# What counts as an ordinary score (drawn) rather than an outlier (clamped): see the module docstring.
SPREAD_FACTOR = 4.0
NOISE_FACTOR = 6.0
RELATIVE_ALLOWANCE = 0.15
ROBUST_SIGMAS = 5.0


def _shorten(text: str, limit: int = LABEL_CHARACTERS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def save_progress_plot(report: RunReport, path: Path) -> Path:
    """Draw the run's progress to a PNG at `path` (replaced atomically) and return the path."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt
    from matplotlib import ticker, transforms

    path = Path(path)
    scored = [t for t in report.trials if t.val_bpb is not None]
    kept = [t for t in scored if t.status == "keep" or t.trial == report.baseline_trial]
    discarded = [t for t in scored if t not in kept]
    crashed = [t for t in report.trials if t.status in ("crash", "timeout")]
    rejected = [t for t in report.trials if t.status == "rejected"]

    figure, axes = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
    try:
        counts = report.counts
        axes.set_title(f"{report.tag}: {counts.trials} trials after the baseline, {counts.kept} kept"
                       + (f" ({report.status})" if report.status not in ("finished", "unknown") else ""))
        axes.set_xlabel("trial")
        axes.set_ylabel("val_bpb (lower is better)")
        axes.grid(True, alpha=0.3)
        if not scored:
            axes.text(0.5, 0.5, "no trial has been scored yet", ha="center", va="center",
                      transform=axes.transAxes, fontsize=14, color="#555555")
        else:
            bottom, top = y_range(report, [t.val_bpb for t in scored])
            above = [t for t in discarded if t.val_bpb > top]
            within = [t for t in discarded if t.val_bpb <= top]
            axes.scatter([t.trial for t in within], [t.val_bpb for t in within], s=16, c=DISCARD_COLOR,
                         label=f"discarded ({len(discarded)})", zorder=2)
            if above:
                axes.scatter([t.trial for t in above], [top] * len(above), s=24, c=DISCARD_COLOR, marker="^",
                             label=f"discarded, above the axis ({len(above)})", zorder=2)
            axes.scatter([t.trial for t in kept], [t.val_bpb for t in kept], s=46, c=KEPT_COLOR,
                         edgecolors="black", linewidths=0.6, label=f"kept ({len(kept) - 1 if kept else 0})",
                         zorder=4)
            steps = [(t.trial, t.best_val_bpb) for t in report.trials if t.best_val_bpb is not None]
            if steps:
                last_trial = max(t.trial for t in report.trials)
                xs = [x for x, _ in steps] + [last_trial]
                ys = [y for _, y in steps] + [steps[-1][1]]
                axes.step(xs, ys, where="post", color=BEST_COLOR, linewidth=1.6, label="running best",
                          zorder=3)
            for t in _labelled(kept, report.baseline_trial):
                label = "baseline" if t.trial == report.baseline_trial else _shorten(t.description)
                note = axes.annotate(label, (t.trial, t.val_bpb), xytext=(5, 6), textcoords="offset points",
                                     fontsize=8, rotation=25, color="#1a5e1a", zorder=5)
                note.set_in_layout(False)  # a long label may run off the edge; it must not shrink the axes
            bar = keep_bar(report)
            if bar is not None:
                reference, needed = bar
                axes.axhspan(needed, reference, color=NOISE_COLOR, alpha=0.18, zorder=1, linewidth=0,
                             label=f"noise floor: a keep needed < {needed:.4f} (baseline mean - "
                                   f"{reference - needed:.4f})")
                axes.axhline(needed, color=NOISE_COLOR, linestyle="--", linewidth=1.0, zorder=1)
            margin = max((top - bottom) * 0.08, 1e-4)
            axes.set_ylim(bottom - margin, top + 2 * margin)  # headroom for the crash markers
        edge = transforms.blended_transform_factory(axes.transData, axes.transAxes)
        if crashed:
            axes.scatter([t.trial for t in crashed], [0.965] * len(crashed), transform=edge, marker="x",
                         s=28, c=CRASH_COLOR, label=f"crashed, no score ({len(crashed)})", zorder=4)
        if rejected:
            axes.scatter([t.trial for t in rejected], [0.935] * len(rejected), transform=edge, marker="x",
                         s=28, c=REJECT_COLOR, label=f"rejected ({len(rejected)})", zorder=4)
        if report.trials:
            numbers = [t.trial for t in report.trials]
            axes.set_xlim(min(numbers) - 0.5, max(numbers) + 1.5)
            axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
            axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=6, fontsize=9, frameon=False)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".progress-", suffix=".png", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as stream:
                figure.savefig(stream, format="png")
            os.chmod(temporary, 0o644)  # mkstemp makes it private; the plot is meant to be shared
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    finally:
        plt.close(figure)
    return path


def _labelled(kept: list, baseline_trial: int | None) -> list:
    """The kept trials to label: all of them, or the baseline and the biggest steps when there are many."""
    if len(kept) <= MAX_LABELS:
        return kept
    steps = [t for t in kept if t.trial != baseline_trial and t.delta is not None]
    steps.sort(key=lambda t: t.delta)  # most negative first: the biggest improvements
    chosen = {t.trial for t in steps[: MAX_LABELS - 1]} | {baseline_trial}
    return [t for t in kept if t.trial in chosen]


def _finite_number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def keep_bar(report: RunReport) -> tuple[float, float] | None:
    """(the baseline's mean over its seeds, that mean minus the keep threshold) when the run measured
    a noise floor; None otherwise. A proposal first had to score below the second to be kept."""
    floor = report.noise_floor or {}
    threshold = _finite_number(floor.get("keep_threshold"))
    reference = _finite_number(floor.get("mean"))
    if reference is None:
        reference = report.baseline_val_bpb
    if threshold is None or reference is None:
        return None
    return reference, reference - threshold


def y_range(report: RunReport, values: list[float]) -> tuple[float, float]:
    """(lowest, ceiling) of the y axis before margins: every score and the keep bar, except outliers
    above the ceiling (drawn clamped). See the module docstring for what counts as ordinary."""
    bar = keep_bar(report)
    lowest = min([*values, *([bar[1]] if bar else [])])
    return lowest, _clamp_ceiling(report, values)


def _clamp_ceiling(report: RunReport, values: list[float]) -> float:
    """The top of the y axis: the highest score, unless it is an outlier."""
    highest = max(values)
    baseline = report.baseline_val_bpb if report.baseline_val_bpb is not None else min(values)
    spread = max(baseline - min(values), 0.0)
    std = _finite_number((report.noise_floor or {}).get("std")) or 0.0
    allowance = max(SPREAD_FACTOR * spread, NOISE_FACTOR * std, RELATIVE_ALLOWANCE * abs(baseline), 1e-3)
    ordered = sorted(values)
    median = statistics.median(ordered)
    robust_std = 1.4826 * statistics.median(abs(v - median) for v in ordered)
    ceiling = max(baseline + allowance, median + ROBUST_SIGMAS * robust_std)
    return highest if highest <= ceiling else ceiling
