"""The records of a run: `runs/<tag>/trials.jsonl` (complete) and `results.tsv` (reference columns).

One JSON line per finished trial. An append writes the whole line with a single `write` on a file
opened for appending and fsyncs it, so a crash leaves either the full line or nothing of it; a
reader still skips a torn last line (say, from a full disk) and reports it rather than failing.
`results.tsv` is derived from the same records (`commit val_bpb memory_gb status description`)
so notebooks written for the reference read it unchanged.

`run.json` (the run's state and settings) is rewritten whole through a temporary file and
`os.replace` (`autoresearch.atomic`), so a reader sees the old version or the new one, never half
of one.

What this does not protect against: two processes appending to the same run at once (the loop
holds a lock file for that), or a user editing the files by hand.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from autoresearch.atomic import strict_json_dumps, write_json_atomic, write_text_atomic  # noqa: F401

# write_text_atomic is re-exported for callers that still reach it through the ledger.
from autoresearch.errors import UserError

TRIALS_FILE = "trials.jsonl"
RUN_FILE = "run.json"
RESULTS_FILE = "results.tsv"
RESULTS_HEADER = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"

# Trial statuses. "keep" advances the branch; every other status leaves the best where it was.
KEEP, DISCARD, CRASH, TIMEOUT, INTERRUPTED, REJECTED = "keep", "discard", "crash", "timeout", "interrupted", "rejected"
STATUSES = (KEEP, DISCARD, CRASH, TIMEOUT, INTERRUPTED, REJECTED)


@dataclass
class TrialRecord:
    trial: int  # 0 is the unmodified baseline
    status: str
    description: str
    parent: str  # commit the trial started from (the best at the time)
    commit: str  # the trial's own commit (kept reachable under refs/autoresearch/<tag>/trial-NNNN)
    started_at: str  # ISO 8601, UTC
    ended_at: str
    val_bpb: float | None = None  # the harness's number; None when the trial produced none
    delta: float | None = None  # val_bpb minus the best val_bpb before this trial (negative is better)
    best_val_bpb: float | None = None  # the best after this trial's decision
    holdout_bpb: float | None = None
    training_seconds: float | None = None  # the harness's clock around train.py
    evaluation_seconds: float | None = None
    agent_seconds: float | None = None
    total_seconds: float | None = None
    peak_memory_gb: float | None = None
    claimed_val_bpb: float | None = None  # what train.py printed; informational only
    claimed_training_seconds: float | None = None
    seed: int | None = None
    repair_attempt: int = 0  # 0 for a fresh proposal, n for the n-th repair of a crash
    program_md_sha256: str = ""
    failure_reason: str | None = None  # crash tail summary, rejection reason, timeout note
    decision: str | None = None  # how keep/discard was decided, in words
    tokens: dict[str, int] = field(default_factory=dict)  # input, output, cache_read, cache_write
    cost_usd: float = 0.0
    train_py_sha256: str = ""  # sha256 of the trial's train.py: no source is tried twice in a run
    isolation: str = ""  # the sandbox its code ran under: "landlock-v7" or "audit-hook" ("": none of it ran)
    extra: dict = field(default_factory=dict)  # anything a later version adds

    @classmethod
    def from_dict(cls, payload: dict) -> TrialRecord:
        known = {f.name for f in fields(cls)}
        record = cls(**{k: v for k, v in payload.items() if k in known})
        record.extra.update({k: v for k, v in payload.items() if k not in known})
        return record

    def to_dict(self) -> dict:
        return asdict(self)


def _append_line(path: Path, line: str) -> None:
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def results_row(record: TrialRecord) -> str:
    commit = (record.commit or "0000000")[:7]
    val = f"{record.val_bpb:.6f}" if record.val_bpb is not None else "0.000000"
    memory = f"{record.peak_memory_gb:.1f}" if record.peak_memory_gb is not None else "0.0"
    description = " ".join(record.description.split())  # no tabs or newlines inside a cell
    return f"{commit}\t{val}\t{memory}\t{record.status}\t{description}"


def append_trial(run_dir: Path, record: TrialRecord) -> None:
    """Record a finished trial in trials.jsonl, then in results.tsv."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _append_line(run_dir / TRIALS_FILE, strict_json_dumps(record.to_dict()))
    results = run_dir / RESULTS_FILE
    if not results.exists():
        _append_line(results, RESULTS_HEADER)
    _append_line(results, results_row(record))


def close_torn_lines(run_dir: Path) -> None:
    """End trials.jsonl and results.tsv with a newline, so an append after a torn write starts clean."""
    for name in (TRIALS_FILE, RESULTS_FILE):
        path = Path(run_dir) / name
        if path.is_file() and path.stat().st_size:
            with open(path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                last = handle.read(1)
            if last != b"\n":
                _append_line(path, "")


def rewrite_results(run_dir: Path, records: list[TrialRecord]) -> None:
    """Write results.tsv afresh from the records (trials.jsonl is the source of truth)."""
    write_text_atomic(Path(run_dir) / RESULTS_FILE,
                      RESULTS_HEADER + "".join(results_row(record) + "\n" for record in records))


@dataclass
class TrialLog:
    records: list[TrialRecord]
    torn_lines: list[int]  # 1-based numbers of lines that did not parse (a torn last line, say)


def read_trials(run_dir: Path) -> TrialLog:
    path = Path(run_dir) / TRIALS_FILE
    records, torn = [], []
    if not path.exists():
        return TrialLog(records, torn)
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                payload = json.loads(line)
                if not isinstance(payload, dict):
                    raise TypeError("not a record")
                records.append(TrialRecord.from_dict(payload))
            except (json.JSONDecodeError, TypeError):
                torn.append(number)
    return TrialLog(records, torn)


# --- trial-NNNN/record.json: each trial's own copy of its record --------------------------------
# Written (atomically) when the trial starts, again once it is committed, and finally, complete,
# before its line is appended to trials.jsonl. A resume rebuilds a lost or torn line of
# trials.jsonl from it, and describes a trial that was interrupted with what it really was (a
# noise-floor run with its seed, the baseline) rather than guessing from git. `settings` are the
# run's measurement settings, so that they survive a lost run.json.
TRIAL_RECORD_FILE = "record.json"


@dataclass
class TrialFile:
    record: TrialRecord
    in_progress: bool  # True until the trial was recorded: it was interrupted if nothing else says otherwise
    settings: dict


def write_trial_file(trial_dir: Path, record: TrialRecord, *, in_progress: bool, settings: dict) -> None:
    write_json_atomic(Path(trial_dir) / TRIAL_RECORD_FILE,
                      {"record": record.to_dict(), "in_progress": in_progress, "settings": settings})


def read_trial_file(trial_dir: Path) -> TrialFile | None:
    """The trial's record.json, or None when it is missing or unreadable (it is one source among several)."""
    try:
        payload = json.loads((Path(trial_dir) / TRIAL_RECORD_FILE).read_text(encoding="utf-8"))
        record = TrialRecord.from_dict(payload["record"])
        return TrialFile(record, bool(payload.get("in_progress")), dict(payload.get("settings") or {}))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def recorded_settings(run_dir: Path) -> dict:
    """The run's measurement settings: run.json's `config`, or, when run.json is lost, the newest trial's."""
    state = read_run_state(run_dir)
    if state is not None:
        return dict(state.get("config") or {})
    for trial_dir in sorted(Path(run_dir).glob("trial-*"), reverse=True):
        trial_file = read_trial_file(trial_dir)
        if trial_file is not None and trial_file.settings:
            return trial_file.settings
    return {}


# --- run.json ------------------------------------------------------------------------------------
# {"tag", "branch", "project_dir", "worktree", "created_at", "updated_at",
#  "status": "running" | "finished" | "interrupted", "baseline_commit", "config": {...},
#  "best": {"trial", "commit", "val_bpb"}, "noise_floor", "stop_reason"}
RUN_RUNNING, RUN_FINISHED, RUN_INTERRUPTED = "running", "finished", "interrupted"


def write_run_state(run_dir: Path, state: dict) -> None:
    write_json_atomic(Path(run_dir) / RUN_FILE, state)


def read_run_state(run_dir: Path) -> dict | None:
    """The run's run.json, or None when the run has none yet."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"{path} is unreadable ({error}); restore it from a backup or start a new --tag") from None
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a run's state; restore it from a backup or start a new --tag")
    return state
