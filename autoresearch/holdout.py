"""The hidden holdout: the baseline and the best of a run scored on the holdout split, never to decide.

`score_run(run_dir)` is called by the loop when a run ends by a limit, and by `autoresearch eval
<tag>`. It scores the baseline (the run's first kept trial) and the best (its last kept trial)
with the harness's evaluator on split "holdout", writes `holdout.json` and `holdout.log` beside
each trial, sets `holdout_bpb` on their records (trials.jsonl is rewritten whole through a
temporary file and os.replace, under the run's lock), and stores in run.json

    "holdout": {"baseline": 1.0123, "best": 0.9987, "baseline_trial": 0, "best_trial": 7,
                "baseline_commit": "...", "best_commit": "...", "baseline_val_bpb": ..., "best_val_bpb": ...,
                "flag": null | "val improved ... but holdout did not ...", "scored_at": "..."}

`flag` is set when the best's val_bpb is lower than the baseline's but its holdout_bpb is not: the
kept changes may fit the validation split rather than the task. The loop never reads any of this.

`score_commit(runs_dir, commit)` (`autoresearch eval <commit>`) scores one trial's train.py, found
by its commit (a prefix will do) in any run under runs/, on the holdout split, and prints it; it
writes only that trial's holdout.json, not the records.

Weights: the loop keeps the trained weights of the baseline and of the best trial
(`trial-NNNN/model.pt`) and deletes every other trial's once it is recorded, so only those can be
scored later. Nothing is retrained: a retrained model would be another draw of the run-to-run
noise, not the model that was measured. The train.py scored is the trial's recorded copy
(`trial-NNNN/train.py`), beside the prepare.py of its commit (from git, else the run's worktree).

What this does not protect against: documents duplicated across splits (prepare splits by
document and does not deduplicate), a person who reads the holdout every morning and steers
program.md by it (it then becomes a second validation set), and a train.py that reads the holdout
files when imported (the evaluator's audit hook ends that process with a `tamper` verdict, which
is reported here as a missing score, not as a rejection).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autoresearch import atomic, ledger
from autoresearch.errors import UserError
from autoresearch.ledger import KEEP, TrialRecord
from autoresearch.runlock import acquire_run_lock, release_run_lock
from autoresearch.verdict import Evaluator

HOLDOUT_JSON = "holdout.json"
HOLDOUT_LOG = "holdout.log"
WEIGHTS_FILE = "model.pt"


@dataclass
class Scored:
    """One trial's val_bpb (from its record) beside its holdout_bpb (scored now)."""

    role: str  # "baseline", "best" or "commit"
    run: str  # the run's tag
    trial: int
    commit: str
    val_bpb: float | None
    holdout_bpb: float | None
    reason: str | None = None  # why there is no holdout score


def _trial_dir(run_dir: Path, trial: int) -> Path:
    return Path(run_dir) / f"trial-{trial:04d}"


def _prepare_source(state: dict, commit: str, run_dir: Path) -> str | None:
    """The prepare.py of `commit` (from the project's git), else the run's worktree copy."""
    project = state.get("project_dir")
    if project and commit and Path(project).is_dir():
        try:
            done = subprocess.run(["git", "-C", project, "show", f"{commit}:prepare.py"], capture_output=True,
                                  text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            done = None
        if done is not None and done.returncode == 0:
            return done.stdout
    for worktree in (state.get("worktree"), Path(run_dir) / "worktree"):
        if worktree and (Path(worktree) / "prepare.py").is_file():
            return (Path(worktree) / "prepare.py").read_text(encoding="utf-8")
    return None


def _default_evaluator() -> Evaluator:
    from autoresearch.evaluate import run_evaluator

    return run_evaluator


def score_trial(run_dir: Path, record: TrialRecord, state: dict, *, evaluator: Evaluator | None = None,
                device: str | None = None, timeout: float = 600.0) -> tuple[float | None, str | None]:
    """(holdout_bpb, None), or (None, why not) for one recorded trial with kept weights."""
    trial_dir = _trial_dir(run_dir, record.trial)
    weights = trial_dir / WEIGHTS_FILE
    source = trial_dir / "train.py"
    if not weights.is_file():
        return None, (f"no weights kept for trial {record.trial} (only the baseline's and the best's are kept)")
    if not source.is_file():
        return None, f"{source} is missing"
    prepare = _prepare_source(state, record.commit, run_dir)
    if prepare is None:
        return None, f"the prepare.py of commit {record.commit[:7]} could not be found"
    config = state.get("config") or {}
    data_dir = config.get("data_dir")
    if not data_dir or not Path(data_dir).is_dir():
        raise UserError(f"the dataset of run {Path(run_dir).name} ({data_dir}) is gone; prepare it again to score it")
    with tempfile.TemporaryDirectory(prefix="autoresearch-holdout-") as scratch:
        shutil.copy(source, Path(scratch) / "train.py")
        (Path(scratch) / "prepare.py").write_text(prepare, encoding="utf-8")
        result = (evaluator or _default_evaluator())(
            Path(scratch) / "train.py", weights, Path(data_dir), split="holdout", tokens=config.get("eval_tokens"),
            seq_len=config.get("seq_len"), device=device or config.get("device") or "auto", timeout=timeout,
            log_path=trial_dir / HOLDOUT_LOG, private_roots=(Path(run_dir).resolve(),),  # env: childenv.py
            compile_cache=Path(run_dir).resolve() / "compile-cache")
    payload = result.to_dict() if hasattr(result, "to_dict") else dict(vars(result))
    atomic.write_json_atomic(trial_dir / HOLDOUT_JSON, payload)
    if not getattr(result, "ok", False):
        return None, f"the evaluator failed on holdout ({getattr(result, 'failure_kind', None)}): " \
                     f"{getattr(result, 'reason', None)}"
    return float(result.bpb), None  # type: ignore[attr-defined]


def flag(baseline_val: float | None, best_val: float | None, baseline_holdout: float | None,
         best_holdout: float | None) -> str | None:
    """'val improved ... but holdout did not ...' when that is so, else None."""
    if None in (baseline_val, best_val, baseline_holdout, best_holdout):
        return None
    if best_val < baseline_val and best_holdout >= baseline_holdout:  # type: ignore[operator]
        return (f"val improved by {baseline_val - best_val:.6f} ({baseline_val:.6f} -> {best_val:.6f}) but holdout "
                f"did not ({baseline_holdout:.6f} -> {best_holdout:.6f}): the kept changes may fit the "
                "validation split rather than the task")
    return None


def write_holdout_scores(run_dir: Path, scores: dict[int, float | None]) -> None:
    """Set `holdout_bpb` on the records of these trials: trials.jsonl rewritten whole, atomically.

    Lines that do not parse are kept as they are. The caller holds the run's lock.
    """
    path = Path(run_dir) / ledger.TRIALS_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    rewritten = []
    for line in lines:
        try:
            payload = json.loads(line)
        except json.JSONDecodeError:
            rewritten.append(line)
            continue
        if isinstance(payload, dict) and payload.get("trial") in scores:
            payload["holdout_bpb"] = scores[payload["trial"]]
            line = atomic.strict_json_dumps(payload)
        rewritten.append(line)
    atomic.write_text_atomic(path, "".join(line + "\n" for line in rewritten))


def baseline_and_best(records: list[TrialRecord]) -> tuple[TrialRecord | None, TrialRecord | None]:
    kept = [record for record in sorted(records, key=lambda r: r.trial) if record.status == KEEP and record.commit]
    return (kept[0], kept[-1]) if kept else (None, None)


def score_run(run_dir: Path, evaluator: Evaluator | None = None, *, force: bool = True, locked: bool = False,
              device: str | None = None) -> dict | None:
    """Score a run's baseline and best on holdout; record and return run.json's `holdout` (None: no baseline).

    `force=False` reuses a holdout_bpb already on a record (the loop, at the end of a resumed run).
    `locked` says the caller holds the run's lock (the loop does); otherwise it is taken here.
    """
    run_dir = Path(run_dir)
    if not locked:
        acquire_run_lock(run_dir)
    try:
        state = ledger.read_run_state(run_dir) or {}
        baseline, best = baseline_and_best(ledger.read_trials(run_dir).records)
        if baseline is None or best is None:
            return None
        scores: dict[int, float | None] = {}
        reasons: dict[str, str] = {}
        for role, record in (("baseline", baseline), ("best", best)):
            if record.trial in scores:
                continue
            if not force and record.holdout_bpb is not None:
                scores[record.trial] = record.holdout_bpb
                continue
            scores[record.trial], why = score_trial(run_dir, record, state, evaluator=evaluator, device=device)
            if why:
                reasons[role] = why
        write_holdout_scores(run_dir, {trial: score for trial, score in scores.items() if score is not None})
        summary = {
            "baseline": scores[baseline.trial], "best": scores[best.trial],
            "baseline_trial": baseline.trial, "best_trial": best.trial,
            "baseline_commit": baseline.commit, "best_commit": best.commit,
            "baseline_val_bpb": baseline.val_bpb, "best_val_bpb": best.val_bpb,
            "flag": flag(baseline.val_bpb, best.val_bpb, scores[baseline.trial], scores[best.trial]),
            "scored_at": _now(), "errors": reasons or None,
        }
        state = ledger.read_run_state(run_dir) or state
        state["holdout"] = summary
        ledger.write_run_state(run_dir, state)
        return summary
    finally:
        if not locked:
            release_run_lock(run_dir)


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def find_commit(runs_dir: Path, commit: str) -> tuple[Path, TrialRecord]:
    """The run and trial whose commit starts with `commit`; a trial with kept weights first."""
    matches = []
    for trials in sorted(Path(runs_dir).glob(f"*/{ledger.TRIALS_FILE}")):
        for record in ledger.read_trials(trials.parent).records:
            if record.commit and record.commit.startswith(commit):
                matches.append((trials.parent, record))
    if not matches:
        raise UserError(f"no trial of any run under {runs_dir}/ has commit {commit}; pass a run's tag or a "
                        "commit from its trials (see `autoresearch report`)")
    with_weights = [(run, record) for run, record in matches if (_trial_dir(run, record.trial) / WEIGHTS_FILE).is_file()]
    if not with_weights:
        run, record = matches[-1]
        raise UserError(f"commit {commit} is trial {record.trial} of run {run.name}, but its weights were not kept "
                        "(only the baseline's and the best's are); `autoresearch eval` does not retrain")
    return with_weights[-1]


def score_commit(runs_dir: Path, commit: str, evaluator: Evaluator | None = None,
                 device: str | None = None) -> Scored:
    run_dir, record = find_commit(runs_dir, commit)
    state = ledger.read_run_state(run_dir) or {}
    holdout_bpb, why = score_trial(run_dir, record, state, evaluator=evaluator, device=device)
    return Scored("commit", run_dir.name, record.trial, record.commit, record.val_bpb, holdout_bpb, why)


def rows_of(run_dir: Path, summary: dict) -> list[Scored]:
    """The baseline and the best of a run's `holdout` summary, as rows to print."""
    errors = summary.get("errors") or {}
    rows = [Scored("baseline", Path(run_dir).name, summary["baseline_trial"], summary["baseline_commit"],
                   summary["baseline_val_bpb"], summary["baseline"], errors.get("baseline"))]
    if summary["best_trial"] != summary["baseline_trial"]:
        rows.append(Scored("best", Path(run_dir).name, summary["best_trial"], summary["best_commit"],
                           summary["best_val_bpb"], summary["best"], errors.get("best")))
    return rows


def _bpb(value: float | None) -> str:
    return f"{value:.6f}" if value is not None else "—"


def format_table(rows: list[Scored], flag_text: str | None = None) -> str:
    """Val and holdout side by side, one row per scored trial, a change row, then the flag."""
    lines = [f"{'':10}{'run':>12}{'trial':>7}  {'commit':8}{'val_bpb':>11}{'holdout_bpb':>13}"]
    for row in rows:
        lines.append(f"{row.role:10}{row.run[-12:]:>12}{row.trial:>7}  {row.commit[:7]:8}{_bpb(row.val_bpb):>11}"
                     f"{_bpb(row.holdout_bpb):>13}")
    if len(rows) == 2 and all(row.val_bpb is not None and row.holdout_bpb is not None for row in rows):
        val_change = rows[1].val_bpb - rows[0].val_bpb  # type: ignore[operator]
        holdout_change = rows[1].holdout_bpb - rows[0].holdout_bpb  # type: ignore[operator]
        lines.append(f"{'change':10}{'':12}{'':7}  {'':8}{val_change:>+11.6f}{holdout_change:>+13.6f}")
    for row in rows:
        if row.reason:
            lines.append(f"{row.role}: no holdout score: {row.reason}")
    if flag_text:
        lines.append(f"FLAG: {flag_text}")
    elif len(rows) == 2 and all(row.holdout_bpb is not None for row in rows):
        lines.append("holdout agrees: the best is no worse than the baseline on holdout")
    return "\n".join(lines)
