"""The morning read: gather a run's records into one summary (`RunReport`) and nothing else.

`load_run` reads `runs/<tag>/` (run.json, trials.jsonl, the trial directories) or a reference-style
`results.tsv` on its own, and computes what the researcher wants to know first: how many trials,
how many kept, baseline -> best, holdout and noise floor when recorded, where the night's time
went, the kept changes in order, crashes and rejections grouped by reason, and which version of
`program.md` each stretch of trials ran under. Rendering lives in `render.py`, the plot in
`plot.py`; they import this module, never the other way: it knows nothing about the terminal.

It only reads: it takes no lock and works while a run is still writing (a trial directory with no
record yet is reported as pending; a torn last line in trials.jsonl is skipped and warned about).
What it does not protect against: records edited by hand so that they contradict each other (it
trusts the records over run.json), or a run directory replaced while it is being read.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from autoresearch import ledger
from autoresearch.errors import UserError

RUN_FILE = "run.json"
PLOT_FILE = "progress.png"
MARKDOWN_FILE = "report.md"
JSON_SCHEMA_VERSION = 1
SHA_PREFIX = 12  # characters of program.md's sha256 shown to tell versions apart
TRIAL_DIR_PATTERN = re.compile(r"^trial-(\d+)$")
CRASHED = (ledger.CRASH, ledger.TIMEOUT)


# --- The summary ----------------------------------------------------------------------------------


@dataclass
class TrialSummary:
    """One trial as the report sees it; `best_val_bpb` is the running best after its decision."""

    trial: int
    status: str
    description: str
    val_bpb: float | None
    delta: float | None  # val_bpb minus the best before this trial (negative is better)
    best_val_bpb: float | None
    holdout_bpb: float | None
    commit: str
    program_md_sha256: str
    failure_reason: str | None
    decision: str | None
    repair_attempt: int
    training_seconds: float | None
    evaluation_seconds: float | None
    agent_seconds: float | None
    total_seconds: float | None
    cost_usd: float
    extra: dict = field(default_factory=dict)  # fields this version of the report does not know


@dataclass
class KeptChange:
    trial: int
    description: str
    val_bpb: float | None
    delta: float | None  # against the best before it (negative is better)
    commit: str
    holdout_bpb: float | None
    decision: str | None


@dataclass
class FailureGroup:
    """Crashes (crash + timeout) or rejections that share a normalized reason."""

    kind: str  # "crashed" or "rejected"
    reason: str  # normalized: first meaningful line, numbers and paths blanked out
    example: str  # the first such reason as recorded (first meaningful line, shortened)
    count: int
    trials: list[int]


@dataclass
class ProgramStretch:
    """A run of consecutive trials under one version of program.md."""

    sha256: str  # prefix; "" when the records carry none
    first_trial: int
    last_trial: int
    trials: int
    kept: int
    best_delta: float | None  # the most negative delta any trial in the stretch scored
    gain: float | None  # best before the stretch minus best after it (positive is better)


@dataclass
class Counts:
    """Trials after the baseline, by outcome; `crashed` is crash + timeout."""

    trials: int = 0
    kept: int = 0
    discarded: int = 0
    crashed: int = 0
    crash: int = 0
    timeout: int = 0
    rejected: int = 0
    interrupted: int = 0
    noise_runs: int = 0  # noise-floor runs of the baseline (not experiments: never kept, not in `trials`)


@dataclass
class TimeBreakdown:
    """Where the night went. Any part may be None when the records carry no timings."""

    wall_seconds: float | None
    training_seconds: float | None
    evaluation_seconds: float | None
    agent_seconds: float | None
    other_seconds: float | None
    training_share: float | None  # training / wall: the share of the night the GPU trained


@dataclass
class RunReport:
    tag: str
    source: str  # "run" (a harness run directory) or "results.tsv" (a reference-style file alone)
    run_dir: Path
    status: str  # running | finished | interrupted | unknown
    stop_reason: str | None
    created_at: str | None
    updated_at: str | None
    config: dict
    project_dir: str | None
    worktree: str | None
    counts: Counts
    baseline_trial: int | None
    baseline_commit: str | None
    baseline_val_bpb: float | None
    baseline_holdout_bpb: float | None
    best_trial: int | None
    best_commit: str | None
    best_val_bpb: float | None
    best_holdout_bpb: float | None
    gain: float | None  # baseline minus best (positive is better)
    gain_pct: float | None  # gain as a percentage of the baseline
    noise_floor: dict | None
    time: TimeBreakdown
    tokens: dict[str, int]
    cost_usd: float
    trials: list[TrialSummary]
    kept: list[KeptChange]
    failures: list[FailureGroup]
    programs: list[ProgramStretch]
    pending_trials: list[int]  # trial directories with no record yet (a trial in progress)
    warnings: list[str] = field(default_factory=list)
    holdout: dict | None = None  # run.json's `holdout`: baseline and best on holdout, and the flag
    cost_unknown_trials: int = 0  # trials whose agent used a model without prices (their cost is not in cost_usd)
    isolation: dict[str, int] = field(default_factory=dict)  # sandbox mode -> trials whose code ran under it

    @property
    def plot_path(self) -> Path:
        return self.run_dir / PLOT_FILE

    @property
    def markdown_path(self) -> Path:
        return self.run_dir / MARKDOWN_FILE


# --- Finding a run ----------------------------------------------------------------------------------


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists()
                                 for name in (RUN_FILE, ledger.TRIALS_FILE, ledger.RESULTS_FILE))


def list_runs(runs_dir: Path) -> list[Path]:
    """Run directories under `runs_dir`, oldest first (by run.json updated_at, else mtime)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    runs = [path for path in runs_dir.iterdir() if _is_run_dir(path)]
    return sorted(runs, key=_recency)


def _recency(run_dir: Path) -> tuple[float, str]:
    run_info = _read_run_json(run_dir, warnings=[])
    stamp = _parse_time(run_info.get("updated_at")) if run_info else None
    if stamp is None:
        newest = [run_dir] + [run_dir / name for name in (RUN_FILE, ledger.TRIALS_FILE, ledger.RESULTS_FILE)]
        return (max(path.stat().st_mtime for path in newest if path.exists()), run_dir.name)
    return (stamp.timestamp(), run_dir.name)


def find_run(runs_dir: Path, tag: str | None) -> Path:
    """The run to report: `tag` under `runs_dir`, a path to a run or a results.tsv, or the latest run."""
    runs_dir = Path(runs_dir)
    if tag:
        candidate, as_path = runs_dir / tag, Path(tag)
        if _is_run_dir(candidate):
            return candidate
        if as_path.is_file() or _is_run_dir(as_path):
            return as_path
        if "/" in tag or os.sep in tag or tag.endswith(".tsv"):
            raise UserError(f"{tag} does not exist or holds no run: pass a run directory or a results.tsv")
        known = [path.name for path in list_runs(runs_dir)]
        hint = f"known runs: {', '.join(known[-8:])}" if known else "there are no runs there yet"
        raise UserError(f"no run '{tag}' under {runs_dir}/ ({hint}); pass a tag, a run directory "
                        f"or a results.tsv")
    runs = list_runs(runs_dir)
    if not runs:
        raise UserError(f"no runs under {runs_dir}/ yet: start one with `autoresearch run`, or pass "
                        f"--runs-dir or a results.tsv")
    return runs[-1]


# --- Loading ------------------------------------------------------------------------------------------


def load_run(run_dir: Path) -> RunReport:
    """Read a run directory (or a reference-style results.tsv) and compute its summary."""
    path = Path(run_dir)
    if not path.exists():
        raise UserError(f"{path} does not exist: pass a run directory under runs/ or a results.tsv")
    warnings: list[str] = []
    if path.is_file():
        if path.name == ledger.TRIALS_FILE:
            path = path.parent
        else:
            records = _read_results_tsv(path, warnings)
            if not records:
                warnings.append(f"{path.name} has no trials recorded yet")
            return _summarize(path.parent, _tag_for_tsv(path), "results.tsv", {}, records, [], warnings)
    run_info = _read_run_json(path, warnings)
    if (path / ledger.TRIALS_FILE).exists():
        log = ledger.read_trials(path)
        if log.torn_lines:
            lines = ", ".join(str(number) for number in log.torn_lines)
            warnings.append(f"{ledger.TRIALS_FILE} line {lines} did not parse (a torn write?); "
                            f"reporting the other {len(log.records)} record(s)")
        records, source = log.records, "run"
    elif (path / ledger.RESULTS_FILE).exists():
        records, source = _read_results_tsv(path / ledger.RESULTS_FILE, warnings), "results.tsv"
    else:
        records, source = [], "run"
    if not records:
        warnings.append(f"run '{path.name}' has no trials recorded yet")
    pending = _pending_trials(path, {record.trial for record in records})
    tag = str(run_info.get("tag") or path.name)
    return _summarize(path, tag, source, run_info, records, pending, warnings)


def _tag_for_tsv(path: Path) -> str:
    return path.parent.name if path.name == ledger.RESULTS_FILE else path.stem


def _read_run_json(run_dir: Path, warnings: list[str]) -> dict:
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        return {}
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        warnings.append(f"{path.name} could not be read ({type(error).__name__}); using trials.jsonl alone")
        return {}
    if not isinstance(payload, dict):
        warnings.append(f"{path.name} is not a JSON object; using trials.jsonl alone")
        return {}
    return payload


def _pending_trials(run_dir: Path, recorded: set[int]) -> list[int]:
    pending = []
    if run_dir.is_dir():
        for entry in run_dir.iterdir():
            match = TRIAL_DIR_PATTERN.match(entry.name)
            if match and entry.is_dir() and int(match.group(1)) not in recorded:
                pending.append(int(match.group(1)))
    return sorted(pending)


def _read_results_tsv(path: Path, warnings: list[str]) -> list[ledger.TrialRecord]:
    """Records from the reference's results.tsv: commit, val_bpb, memory_gb, status, description."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise UserError(f"{path} could not be read: {error.strerror}") from error
    columns, first_line = ["commit", "val_bpb", "memory_gb", "status", "description"], 1
    if lines and lines[0].split("\t")[0].strip().lower() == "commit":
        columns = [name.strip().lower() for name in lines[0].split("\t")]
        lines, first_line = lines[1:], 2
    if "val_bpb" not in columns or "status" not in columns:
        raise UserError(f"{path} is not a results.tsv: its header needs at least val_bpb and status columns")
    records, skipped = [], []
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        cells = line.split("\t", len(columns) - 1)
        if len(cells) < len(columns) - 1:  # a missing description is fine, anything less is not
            skipped.append(number)
            continue
        row = dict(zip(columns, (cell.strip() for cell in cells), strict=False))
        status = row.get("status", "").lower()
        value = _number(row.get("val_bpb"))
        if status in CRASHED or value == 0.0:  # the reference writes 0.000000 for a crash
            value = None
        records.append(ledger.TrialRecord(
            trial=len(records), status=status or "unknown", description=row.get("description", ""),
            parent="", commit=row.get("commit", ""), started_at="", ended_at="", val_bpb=value,
            peak_memory_gb=_number(row.get("memory_gb"))))
    if skipped:
        warnings.append(f"{path.name} line {', '.join(map(str, skipped))} had too few columns; skipped")
    return records


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _difference(a: float | None, b: float | None) -> float | None:
    """a - b, rounded to 10 decimals so that 1.0 - 0.98 reads 0.02 in the JSON."""
    return round(a - b, 10) if a is not None and b is not None else None


def _first_finite(*values) -> float | None:
    return next((v for v in map(_finite, values) if v is not None), None)


def _parse_time(text) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


# --- Computing ------------------------------------------------------------------------------------------


def _summarize(run_dir: Path, tag: str, source: str, run_info: dict, records: list[ledger.TrialRecord],
               pending: list[int], warnings: list[str]) -> RunReport:
    by_trial: dict[int, ledger.TrialRecord] = {}
    unnumbered = 0
    for record in records:  # a resumed run may record a trial number again: the last word wins
        if isinstance(record.trial, int) and not isinstance(record.trial, bool):
            record.description = str(record.description or "")
            record.status = str(record.status or "unknown")
            by_trial[record.trial] = record
        else:
            unnumbered += 1
    if unnumbered:
        warnings.append(f"{unnumbered} record(s) without a trial number were left out")
    ordered = [by_trial[number] for number in sorted(by_trial)]

    baseline = next((r for r in ordered if r.trial == 0), ordered[0] if ordered else None)
    trials = _trial_summaries(ordered, baseline)
    kept_records = [r for r in ordered if r is not baseline and r.status == ledger.KEEP]
    best = kept_records[-1] if kept_records else baseline
    best_info = run_info.get("best") if isinstance(run_info.get("best"), dict) else {}

    baseline_val = _finite(baseline.val_bpb) if baseline else None
    best_val = _finite(best.val_bpb) if best else _finite(best_info.get("val_bpb"))
    gain = _difference(baseline_val, best_val)
    gain_pct = round(100.0 * gain / baseline_val, 10) if gain is not None and baseline_val else None
    summaries = {summary.trial: summary for summary in trials}

    tokens: dict[str, int] = {}
    for record in ordered:
        for key, value in (record.tokens or {}).items():
            if isinstance(value, int) and not isinstance(value, bool):
                tokens[key] = tokens.get(key, 0) + value

    noise_floor = run_info.get("noise_floor") if isinstance(run_info.get("noise_floor"), dict) else None
    config = run_info.get("config") if isinstance(run_info.get("config"), dict) else {}
    return RunReport(
        tag=tag, source=source, run_dir=Path(run_dir),
        status=str(run_info.get("status") or "unknown"),
        stop_reason=run_info.get("stop_reason"),
        created_at=run_info.get("created_at"), updated_at=run_info.get("updated_at"),
        config=config, project_dir=run_info.get("project_dir"), worktree=run_info.get("worktree"),
        counts=_counts(ordered, baseline),
        baseline_trial=baseline.trial if baseline else None,
        baseline_commit=run_info.get("baseline_commit") or (baseline.commit if baseline else None),
        baseline_val_bpb=baseline_val,
        baseline_holdout_bpb=_finite(baseline.holdout_bpb) if baseline else None,
        best_trial=best.trial if best else best_info.get("trial"),
        best_commit=(best.commit if best else None) or best_info.get("commit"),
        best_val_bpb=best_val,
        best_holdout_bpb=_first_finite(best.holdout_bpb if best else None, best_info.get("holdout_bpb")),
        gain=gain, gain_pct=gain_pct, noise_floor=noise_floor,
        time=_time_breakdown(ordered, run_info),
        tokens=tokens, cost_usd=round(sum(_finite(r.cost_usd) or 0.0 for r in ordered), 6),
        cost_unknown_trials=sum(1 for r in ordered if (r.extra or {}).get("cost_unknown")),
        trials=trials,
        kept=[KeptChange(trial=r.trial, description=r.description, val_bpb=_finite(r.val_bpb),
                         delta=summaries[r.trial].delta, commit=r.commit,
                         holdout_bpb=_finite(r.holdout_bpb), decision=r.decision) for r in kept_records],
        failures=_failure_groups(ordered),
        programs=_program_stretches(trials, baseline_val),
        pending_trials=pending, warnings=warnings,
        holdout=run_info.get("holdout") if isinstance(run_info.get("holdout"), dict) else None,
        isolation=_isolation_counts(ordered),
    )


def _isolation_counts(records: list[ledger.TrialRecord]) -> dict[str, int]:
    """How many trials ran under each sandbox mode (`landlock-v7`, `audit-hook`); trials that ran no code are left out."""
    counts: dict[str, int] = {}
    for record in records:
        mode = getattr(record, "isolation", "") or record.extra.get("isolation") or ""
        if mode:
            counts[mode] = counts.get(mode, 0) + 1
    return counts


def _trial_summaries(ordered: list[ledger.TrialRecord], baseline) -> list[TrialSummary]:
    summaries, best = [], None
    for record in ordered:
        value = _finite(record.val_bpb)
        delta = _finite(record.delta)
        if delta is None and record is not baseline:
            delta = _difference(value, best)
        if (record is baseline or record.status == ledger.KEEP) and value is not None:
            best = value
        recorded_best = _finite(record.best_val_bpb)
        summaries.append(TrialSummary(
            trial=record.trial, status=record.status, description=record.description or "",
            val_bpb=value, delta=delta if record is not baseline else None,
            best_val_bpb=recorded_best if recorded_best is not None else best,
            holdout_bpb=_finite(record.holdout_bpb), commit=record.commit or "",
            program_md_sha256=record.program_md_sha256 or "", failure_reason=record.failure_reason,
            decision=record.decision, repair_attempt=record.repair_attempt or 0,
            training_seconds=_finite(record.training_seconds),
            evaluation_seconds=_finite(record.evaluation_seconds),
            agent_seconds=_finite(record.agent_seconds), total_seconds=_finite(record.total_seconds),
            cost_usd=_finite(record.cost_usd) or 0.0, extra=dict(record.extra or {})))
        if recorded_best is not None:
            best = recorded_best
    return summaries


def _counts(ordered: list[ledger.TrialRecord], baseline) -> Counts:
    counts = Counts()
    for record in ordered:
        if record is baseline:
            continue
        if (record.extra or {}).get("noise_floor"):
            counts.noise_runs += 1
            continue
        counts.trials += 1
        status = record.status
        if status == ledger.KEEP:
            counts.kept += 1
        elif status == ledger.DISCARD:
            counts.discarded += 1
        elif status in CRASHED:
            counts.crashed += 1
            setattr(counts, status, getattr(counts, status) + 1)
        elif status == ledger.REJECTED:
            counts.rejected += 1
        elif status == ledger.INTERRUPTED:
            counts.interrupted += 1
    return counts


def _time_breakdown(ordered: list[ledger.TrialRecord], run_info: dict) -> TimeBreakdown:
    def total(name: str) -> float | None:
        values = [_finite(getattr(record, name)) for record in ordered]
        present = [value for value in values if value is not None]
        return sum(present) if present else None

    starts = [_parse_time(run_info.get("created_at"))] + [_parse_time(r.started_at) for r in ordered]
    ends = [_parse_time(run_info.get("updated_at"))] + [_parse_time(r.ended_at) for r in ordered]
    starts, ends = [s for s in starts if s], [e for e in ends if e]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    if wall is not None and wall <= 0:
        wall = None
    training, evaluation = total("training_seconds"), total("evaluation_seconds")
    agent = total("agent_seconds")
    accounted = sum(part for part in (training, evaluation, agent) if part is not None)
    other = max(0.0, round(wall - accounted, 6)) if wall is not None else None
    share = round(training / wall, 10) if wall and training is not None else None
    return TimeBreakdown(wall_seconds=wall, training_seconds=training, evaluation_seconds=evaluation,
                         agent_seconds=agent, other_seconds=other, training_share=share)


_TRACEBACK_HEAD = "traceback (most recent call last)"
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\w.~-]*/)+[\w.-]*")
_HEX = re.compile(r"\b[0-9a-f]{7,64}\b")
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:e[-+]?\d+)?", re.IGNORECASE)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def reason_headline(reason: str | None, width: int = 100) -> str:
    """The line of a recorded reason that says the most: the first, or a traceback's last."""
    lines = [line.strip() for line in str(reason or "").splitlines() if line.strip()]
    if not lines:
        return "(no reason recorded)"
    line = lines[-1] if lines[0].lower().startswith(_TRACEBACK_HEAD) else lines[0]
    return line if len(line) <= width else line[: width - 1] + "…"


def normalize_reason(reason: str | None) -> str:
    """A grouping key for a failure reason: its headline with paths, hashes and numbers blanked."""
    line = reason_headline(reason, width=10_000)
    if line == "(no reason recorded)":
        return line
    line = _PATH.sub("<path>", line)
    line = _HEX.sub("<hash>", line)
    line = _NUMBER.sub("N", line)
    line = " ".join(line.split())
    return line if len(line) <= 100 else line[:99] + "…"


def _failure_groups(ordered: list[ledger.TrialRecord]) -> list[FailureGroup]:
    groups: dict[tuple[str, str], FailureGroup] = {}
    for record in ordered:
        if record.status in CRASHED:
            kind = "crashed"
        elif record.status == ledger.REJECTED:
            kind = "rejected"
        else:
            continue
        reason = record.failure_reason or ("timed out" if record.status == ledger.TIMEOUT else None)
        key = (kind, normalize_reason(reason))
        if key not in groups:
            groups[key] = FailureGroup(kind=kind, reason=key[1], example=reason_headline(reason),
                                       count=0, trials=[])
        groups[key].count += 1
        groups[key].trials.append(record.trial)
    order = {"crashed": 0, "rejected": 1}
    return sorted(groups.values(), key=lambda g: (order[g.kind], -g.count, g.trials[0]))


def _program_stretches(trials: list[TrialSummary], baseline_val: float | None) -> list[ProgramStretch]:
    stretches: list[ProgramStretch] = []
    best_before = baseline_val
    current: list[TrialSummary] = []

    def close() -> None:
        nonlocal best_before
        # noise-floor runs re-measure the baseline: their deltas are noise, not a program's effect
        deltas = [t.delta for t in current if t.delta is not None and not t.extra.get("noise_floor")]
        best_after = next((t.best_val_bpb for t in reversed(current) if t.best_val_bpb is not None), None)
        gain = _difference(best_before, best_after)
        stretches.append(ProgramStretch(
            sha256=current[0].program_md_sha256[:SHA_PREFIX], first_trial=current[0].trial,
            last_trial=current[-1].trial, trials=len(current),
            kept=sum(1 for t in current if t.status == ledger.KEEP and t.trial != trials[0].trial),
            best_delta=min(deltas) if deltas else None, gain=gain))
        if best_after is not None:
            best_before = best_after

    for summary in trials:
        if current and summary.program_md_sha256 != current[-1].program_md_sha256:
            close()
            current = []
        current.append(summary)
    if current:
        close()
    return stretches


# --- The cumulative diff --------------------------------------------------------------------------------


def cumulative_diff(report: RunReport) -> str:
    """The change to train.py from the baseline to the best: git if it can, else the kept patches."""
    if report.best_trial is None or report.best_trial == report.baseline_trial:
        return ""
    if report.baseline_commit and report.best_commit:
        for where in (report.project_dir, report.worktree):
            if not where or not Path(where).is_dir():
                continue
            try:
                done = subprocess.run(
                    ["git", "-C", str(where), "diff", report.baseline_commit, report.best_commit, "--",
                     "train.py"], capture_output=True, text=True, timeout=30, check=False)
            except (OSError, subprocess.SubprocessError):
                break
            if done.returncode == 0:
                return done.stdout
    patches = []
    for change in report.kept:
        patch = report.run_dir / f"trial-{change.trial:04d}" / "diff.patch"
        if patch.is_file():
            text = patch.read_text(encoding="utf-8", errors="replace")
            patches.append(f"# trial {change.trial}: {change.description}\n{text.rstrip()}\n")
    return "\n".join(patches)


# --- JSON -------------------------------------------------------------------------------------------------


def _json_safe(value):
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def to_json(report: RunReport) -> dict:
    """The report as plain JSON types; `json.loads(json.dumps(d)) == d` holds."""
    document = {"schema": JSON_SCHEMA_VERSION}
    document.update(asdict(report))
    document["plot"] = PLOT_FILE if report.plot_path.exists() else None
    return _json_safe(document)


def run_row(report: RunReport) -> dict:
    """One line of `report --all`: the columns that compare runs side by side."""
    return _json_safe({
        "tag": report.tag, "status": report.status, "trials": report.counts.trials,
        "kept": report.counts.kept, "baseline_val_bpb": report.baseline_val_bpb,
        "best_val_bpb": report.best_val_bpb, "gain": report.gain, "gain_pct": report.gain_pct,
        "best_holdout_bpb": report.best_holdout_bpb, "baseline_holdout_bpb": report.baseline_holdout_bpb,
        "cost_usd": report.cost_usd, "updated_at": report.updated_at,
    })


def compare_runs(runs_dir: Path) -> list[RunReport]:
    """Every run under `runs_dir`, oldest first."""
    runs = list_runs(runs_dir)
    if not runs:
        raise UserError(f"no runs under {Path(runs_dir)}/ yet: start one with `autoresearch run`")
    return [load_run(path) for path in runs]
