"""Showing a `RunReport`: rich text for the terminal, markdown to share, and the `--all` table.

Everything here formats numbers the report already computed; nothing is recomputed. Rich decides
colour from the console it is given (plain text when stdout is not a terminal), so the same call
serves a person and a pipe. What this does not do: wrap or page very long reports (the terminal
scrolls), or escape every markdown construct in agent-written descriptions (pipes and newlines
are escaped; other markup passes through as the agent wrote it).
"""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from autoresearch.atomic import write_text_atomic
from autoresearch.report import PLOT_FILE, RunReport, cumulative_diff, run_row

SPARK_LEVELS = "▁▂▃▄▅▆▇█"
STATUS_GLYPHS = {"keep": ("●", "green"), "discard": ("·", "bright_black"), "crash": ("×", "red"),
                 "timeout": ("×", "red"), "rejected": ("r", "yellow"), "interrupted": ("i", "magenta")}
STATUS_RANK = {"keep": 5, "crash": 4, "timeout": 4, "rejected": 3, "interrupted": 2, "discard": 1}


# --- Numbers as words -----------------------------------------------------------------------------------


def bpb(value: float | None) -> str:
    return f"{value:.6f}" if value is not None else "—"


def signed(value: float | None, digits: int = 6) -> str:
    return f"{value:+.{digits}f}" if value is not None else "—"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def count(value: int) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            scaled = value / limit
            return f"{scaled:.1f}{suffix}" if scaled < 100 else f"{scaled:.0f}{suffix}"
    return str(value)


def trial_ranges(trials: list[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    parts, start, previous = [], None, None
    for number in sorted(trials):
        if start is None:
            start = previous = number
        elif number == previous + 1:
            previous = number
        else:
            parts.append(f"{start}" if start == previous else f"{start}-{previous}")
            start = previous = number
    if start is not None:
        parts.append(f"{start}" if start == previous else f"{start}-{previous}")
    return ", ".join(parts)


def headline_lines(report: RunReport) -> list[tuple[str, str]]:
    """The headline as (label, text) pairs, shared by the terminal and the markdown."""
    c = report.counts
    crashed = f"{c.crashed} crashed"
    if c.crash and c.timeout:
        crashed += f" ({c.crash} crash, {c.timeout} timeout)"
    elif c.timeout:
        crashed += " (timeout)" if c.timeout == 1 else " (all timeouts)"
    parts = [f"{c.kept} kept", f"{c.discarded} discarded", crashed]
    parts += [f"{n} {name}" for n, name in ((c.rejected, "rejected"), (c.interrupted, "interrupted")) if n]
    noise = f" (+ {c.noise_runs} noise-floor run{'s' if c.noise_runs != 1 else ''} of the baseline)" \
        if c.noise_runs else ""
    lines = [("trials", f"{c.trials} after the baseline{noise}: " + " · ".join(parts))]
    baseline = next((t for t in report.trials if t.trial == report.baseline_trial), None)
    if baseline is None:
        lines.append(("val_bpb", "no baseline recorded yet"))
    elif report.baseline_val_bpb is None:
        lines.append(("val_bpb", f"the baseline (trial {baseline.trial}) did not score: {baseline.status}"))
    else:
        text = f"{bpb(report.baseline_val_bpb)} → {bpb(report.best_val_bpb)}"
        if report.gain is not None and report.best_trial != report.baseline_trial:
            text += f"  ({signed(-report.gain)}, {-report.gain_pct:+.2f}%)"
            text += f"  best: trial {report.best_trial}"
            text += f" {report.best_commit[:7]}" if report.best_commit else ""
        else:
            text += "  (no improvement kept yet)"
        lines.append(("val_bpb", text))
    lines.append(("holdout", _holdout_text(report)))
    lines.append(("noise floor", _noise_text(report)))
    if report.source == "run":
        lines.append(("isolation", _isolation_text(report)))
    if report.source == "run":
        lines.append(("time", _time_text(report)))
        lines.append(("tokens", _usage_text(report)))
    else:
        lines.append(("time", "not recorded in a results.tsv"))
    return lines


def _isolation_text(report: RunReport) -> str:
    """`landlock-v7` (every trial), or each mode with its count, or that the records do not say."""
    modes = report.isolation
    if not modes:
        return "not recorded"
    if len(modes) == 1:
        mode = next(iter(modes))
        return mode + ("  ⚠ only the audit hook: child processes and C code were not confined"
                       if mode == "audit-hook" else "")
    return " · ".join(f"{mode}: {count} trial{'s' if count != 1 else ''}" for mode, count in sorted(modes.items()))


def _holdout_text(report: RunReport) -> str:
    text = _holdout_numbers(report)
    flag = (report.holdout or {}).get("flag")
    return f"{text}  ⚠ {flag}" if flag else text


def _holdout_numbers(report: RunReport) -> str:
    base, best = report.baseline_holdout_bpb, report.best_holdout_bpb
    if base is None and best is None:
        return "not recorded (the best was not scored on the holdout split)"
    if base is not None and best is not None and report.best_trial != report.baseline_trial:
        change = best - base
        return f"{bpb(base)} → {bpb(best)}  ({signed(change)}, {100 * change / base:+.2f}%)"
    if best is not None and report.best_trial != report.baseline_trial:
        return f"best {bpb(best)} (baseline not scored on the holdout)"
    if report.best_trial == report.baseline_trial:
        return f"baseline {bpb(base)}"
    return f"baseline {bpb(base)} (best not scored on the holdout)"


def _noise_text(report: RunReport) -> str:
    floor = report.noise_floor
    if not floor:
        return "not measured (keeps were decided on val_bpb alone)"
    seeds = floor.get("seeds") or floor.get("val_bpbs") or []
    parts = []
    if isinstance(floor.get("std"), (int, float)):
        parts.append(f"std {floor['std']:.6f}" + (f" over {len(seeds)} seeds" if seeds else ""))
    if isinstance(floor.get("keep_threshold"), (int, float)):
        parts.append(f"keep threshold {floor['keep_threshold']:.6f}")
    return " · ".join(parts) if parts else "recorded, but without std or threshold"


def _time_text(report: RunReport) -> str:
    time = report.time
    if time.wall_seconds is None and time.training_seconds is None:
        return "no timings recorded"
    parts = [f"{duration(time.wall_seconds)} wall"]
    for name, seconds in (("training", time.training_seconds), ("evaluation", time.evaluation_seconds),
                          ("agent", time.agent_seconds), ("other", time.other_seconds)):
        if seconds is None:
            continue
        share = f" ({100 * seconds / time.wall_seconds:.0f}%)" if time.wall_seconds else ""
        parts.append(f"{name} {duration(seconds)}{share}")
    return " · ".join(parts)


def _usage_text(report: RunReport) -> str:
    names = (("input", "input"), ("output", "output"), ("cache_read", "cache read"),
             ("cache_write", "cache write"))
    parts = [f"{count(report.tokens[key])} {label}" for key, label in names if report.tokens.get(key)]
    parts += [f"{count(value)} {key}" for key, value in sorted(report.tokens.items())
              if key not in dict(names) and value]
    if not parts:
        parts.append("none recorded")
    cost = f" · cost ${report.cost_usd:.2f}"
    if report.cost_unknown_trials:
        unknown = report.cost_unknown_trials
        cost += f" + unknown for {unknown} trial{'s' if unknown != 1 else ''} (a model without prices)"
    return " · ".join(parts) + cost


def _config_line(report: RunReport) -> str:
    config = report.config
    parts = [f"{key} {config[key]}" for key in ("agent", "model", "device", "dataset") if config.get(key)]
    if config.get("budget"):
        parts.append(f"budget {config['budget']}s")
    if report.created_at:
        parts.append(f"started {report.created_at}")
    return " · ".join(parts)


def _status_line(report: RunReport) -> str:
    if report.source == "results.tsv" and report.status == "unknown":
        return "from a results.tsv"
    text = report.status
    if report.stop_reason:
        text += f" ({report.stop_reason})"
    return text


# --- The terminal ---------------------------------------------------------------------------------------


def sparkline(values: list[float], width: int) -> str:
    """Values as block characters, bucketed to `width` (the last value of each bucket)."""
    if not values:
        return ""
    if len(values) > width:
        values = [values[min(len(values) - 1, (i + 1) * len(values) // width - 1)] for i in range(width)]
    low, high = min(values), max(values)
    if high - low < 1e-12:
        return SPARK_LEVELS[0] * len(values)
    top = len(SPARK_LEVELS) - 1
    return "".join(SPARK_LEVELS[round((value - low) / (high - low) * top)] for value in values)


def status_strip(report: RunReport, width: int) -> Text:
    """One glyph per trial (or per bucket of trials, showing the most telling status in it)."""
    statuses = [t.status for t in report.trials]
    if len(statuses) > width:
        n = len(statuses)
        buckets = [statuses[i * n // width:(i + 1) * n // width] for i in range(width)]
        statuses = [max(bucket, key=lambda s: STATUS_RANK.get(s, 0)) for bucket in buckets if bucket]
    strip = Text()
    for status in statuses:
        glyph, style = STATUS_GLYPHS.get(status, ("?", ""))
        strip.append(glyph, style=style)
    return strip


def render_report(report: RunReport, console: Console, diff: bool = False) -> None:
    """Print the morning read of one run to `console`."""
    for warning in report.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"))
    title = Text(f"autoresearch report · {report.tag} · ", style="bold")
    title.append(_status_line(report), style="bold cyan" if report.status == "running" else "bold")
    console.print(title)
    config = _config_line(report)
    if config:
        console.print(Text(config, style="dim"))
    if report.source == "results.tsv":
        console.print(Text(f"read from a results.tsv alone: {report.run_dir}", style="dim"))

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for label, text in headline_lines(report):
        grid.add_row(label, text)
    if report.pending_trials:
        grid.add_row("in progress", "trial " + trial_ranges(report.pending_trials) + " (no record yet)")
    console.print()
    console.print(grid)

    best_line = [t.best_val_bpb for t in report.trials if t.best_val_bpb is not None]
    if report.trials:
        width = max(10, min(console.width - 16 - 26, 120))  # label column, then "  1.000000 → 0.980000"
        progress = Table.grid(padding=(0, 2))
        progress.add_column(style="bold", no_wrap=True, min_width=12)
        progress.add_column()
        if best_line:
            spark = Text(sparkline(best_line, width), style="green")
            spark.append(f"  {bpb(best_line[0])} → {bpb(best_line[-1])}", style="dim")
            progress.add_row("running best", spark)
        progress.add_row("trials", status_strip(report, width))
        progress.add_row("", Text("● kept  · discarded  × crashed  r rejected  i interrupted", style="dim"))
        if report.plot_path.exists():
            progress.add_row("plot", str(report.plot_path))
        console.print()
        console.print(progress)

    if report.kept:
        table = Table(title="kept changes", title_justify="left", box=box.SIMPLE_HEAD, title_style="bold")
        for name, justify in (("trial", "right"), ("val_bpb", "right"), ("Δ", "right"),
                              ("vs baseline", "right"), ("description", "left")):
            table.add_column(name, justify=justify)
        for change in report.kept:
            versus = (change.val_bpb - report.baseline_val_bpb
                      if change.val_bpb is not None and report.baseline_val_bpb is not None else None)
            table.add_row(str(change.trial), bpb(change.val_bpb), Text(signed(change.delta), style="green"),
                          signed(versus), change.description)
        console.print()
        console.print(table)

    if report.failures:
        table = Table(title="crashes and rejections, by reason", title_justify="left", box=box.SIMPLE_HEAD,
                      title_style="bold")
        for name, justify in (("kind", "left"), ("n", "right"), ("reason", "left"), ("trials", "left")):
            table.add_column(name, justify=justify)
        for group in report.failures:
            table.add_row(group.kind, str(group.count), group.example, trial_ranges(group.trials))
        console.print()
        console.print(table)

    if report.programs and any(stretch.sha256 for stretch in report.programs):
        table = Table(title="program.md versions", title_justify="left", box=box.SIMPLE_HEAD,
                      title_style="bold")
        for name, justify in (("program.md", "left"), ("trials", "left"), ("n", "right"), ("kept", "right"),
                              ("best Δ", "right"), ("best moved", "right")):
            table.add_column(name, justify=justify)
        for stretch in report.programs:
            table.add_row(stretch.sha256 or "(unknown)", f"{stretch.first_trial}-{stretch.last_trial}",
                          str(stretch.trials), str(stretch.kept), signed(stretch.best_delta),
                          signed(-stretch.gain if stretch.gain is not None else None))
        console.print()
        console.print(table)

    if diff:
        console.print()
        text = cumulative_diff(report)
        if not text:
            console.print(Text("no diff: the best is still the baseline (or no patches were recorded)",
                               style="dim"))
        else:
            console.print(Text(f"cumulative diff, baseline → best (trial {report.best_trial})", style="bold"))
            if console.is_terminal:
                from rich.syntax import Syntax

                console.print(Syntax(text, "diff", theme="ansi_dark", background_color="default"))
            else:
                console.print(text, markup=False, highlight=False, soft_wrap=True)


def render_comparison(reports: list[RunReport], console: Console) -> None:
    """`report --all`: one row per run."""
    table = Table(title="runs", title_justify="left", box=box.SIMPLE_HEAD, title_style="bold", padding=(0, 1))
    table.add_column("tag", overflow="fold")
    for name in ("trials", "baseline", "best", "Δ%", "holdout", "cost"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for report in reports:
        for warning in report.warnings:
            console.print(Text(f"warning: {report.tag}: {warning}", style="yellow"))
        row = run_row(report)
        change = f"{-row['gain_pct']:+.2f}%" if row["gain_pct"] is not None else "—"
        table.add_row(row["tag"], str(row["trials"]), bpb(row["baseline_val_bpb"]), bpb(row["best_val_bpb"]),
                      change, bpb(row["best_holdout_bpb"]), f"${row['cost_usd']:.2f}", row["status"])
    console.print(table)


# --- Markdown ---------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_text(report: RunReport, diff: bool = False) -> str:
    """The report as a markdown document that embeds progress.png by relative link."""
    lines = [f"# autoresearch report: {report.tag}", "", f"**Status:** {_status_line(report)}"]
    config = _config_line(report)
    if config:
        lines[-1] += f" · {config}"
    lines.append("")
    for warning in report.warnings:
        lines.append(f"> **Warning:** {_cell(warning)}")
        lines.append("")
    if report.plot_path.exists():
        lines += [f"![progress of {report.tag}]({PLOT_FILE})", ""]
    for label, text in headline_lines(report):
        lines.append(f"- **{label}:** {text}")
    if report.pending_trials:
        lines.append(f"- **in progress:** trial {trial_ranges(report.pending_trials)} (no record yet)")
    lines.append("")

    if report.kept:
        lines += ["## Kept changes", "", "| trial | val_bpb | Δ | vs baseline | description |",
                  "|---:|---:|---:|---:|---|"]
        for change in report.kept:
            versus = (change.val_bpb - report.baseline_val_bpb
                      if change.val_bpb is not None and report.baseline_val_bpb is not None else None)
            lines.append(f"| {change.trial} | {bpb(change.val_bpb)} | {signed(change.delta)} "
                         f"| {signed(versus)} | {_cell(change.description)} |")
        lines.append("")
    if report.failures:
        lines += ["## Crashes and rejections", "", "| kind | n | reason | trials |", "|---|---:|---|---|"]
        for group in report.failures:
            lines.append(f"| {group.kind} | {group.count} | {_cell(group.example)} "
                         f"| {trial_ranges(group.trials)} |")
        lines.append("")
    if report.programs and any(stretch.sha256 for stretch in report.programs):
        lines += ["## program.md versions", "", "| program.md | trials | n | kept | best Δ | best moved |",
                  "|---|---|---:|---:|---:|---:|"]
        for stretch in report.programs:
            lines.append(f"| `{stretch.sha256 or '(unknown)'}` | {stretch.first_trial}-{stretch.last_trial} "
                         f"| {stretch.trials} | {stretch.kept} | {signed(stretch.best_delta)} "
                         f"| {signed(-stretch.gain if stretch.gain is not None else None)} |")
        lines.append("")
    if diff:
        text = cumulative_diff(report)
        lines += [f"## Cumulative diff, baseline → best (trial {report.best_trial})", ""]
        if text:
            lines += ["```diff", text.rstrip("\n"), "```", ""]
        else:
            lines += ["No diff: the best is still the baseline.", ""]
    return "\n".join(lines)


def _write_atomically(path: Path, text: str) -> Path:
    write_text_atomic(path, text, mode=0o644)  # the report is meant to be shared, whatever was there
    return path


def write_markdown(report: RunReport, diff: bool = False, plot: bool = True) -> Path:
    """Write `report.md` beside the run's records (drawing progress.png first) and return its path."""
    if plot:
        from autoresearch.plot import save_progress_plot

        save_progress_plot(report, report.plot_path)
    return _write_atomically(report.markdown_path, markdown_text(report, diff=diff))


def write_comparison_markdown(reports: list[RunReport], path: Path) -> Path:
    """`report --all --format md`: the comparison table as markdown."""
    lines = ["# autoresearch runs", "",
             "| tag | trials | kept | baseline | best | gain | holdout | cost | status |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for report in reports:
        row = run_row(report)
        gain = f"{signed(-row['gain'])} ({-row['gain_pct']:+.2f}%)" if row["gain_pct"] is not None else "—"
        lines.append(f"| {_cell(row['tag'])} | {row['trials']} | {row['kept']} "
                     f"| {bpb(row['baseline_val_bpb'])} | {bpb(row['best_val_bpb'])} | {gain} "
                     f"| {bpb(row['best_holdout_bpb'])} | ${row['cost_usd']:.2f} | {row['status']} |")
    return _write_atomically(Path(path), "\n".join(lines) + "\n")
