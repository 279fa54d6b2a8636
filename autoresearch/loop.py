"""The overnight loop: `run_night(config)` runs trials until a limit or a stop request ends the run.

This module is the orchestration: the side effects of a trial (the agent, git, the training and
evaluator processes, the records on disk) in the order a trial takes them. The rules live in
pure modules it asks: history.py (what the records say: the best, the baseline, the noise floor,
the reference, the sources tried, what the next trial is, the repair to plan), decide.py (judge a
run, keep or discard it, when a trial ends the run) and trust.py (the statistics of a keep).

A run starts with the baseline (trial 0: the committed train.py, unedited), then `--noise-runs`
noise-floor trials (the same commit again, each with another seed: "noise floor: baseline, seed
43"; recorded `discard` with extra {"noise_floor": true}, never kept), then proposals. A trial, in
the order `Night.run_trial` takes the steps:

  1. read `program.md` afresh from the user's checkout (the human steers by editing it) and hash it;
  2. propose: the agent edits `train.py` in the run's worktree (the baseline and the noise-floor
     runs are not edited; a repair starts from the crashed train.py and is told its log tail);
  3. validate: train.py parses, differs from its parent, repeats no earlier trial's source, and no
     other file changed; an invalid proposal goes back to the agent with the reason (bounded
     retries), then is recorded `rejected` and never committed;
  4. commit on the run's branch, with a ref `refs/autoresearch/<tag>/trial-NNNN` that outlives resets;
  5. train in a guarded subprocess under the harness's clock, with the seed the harness chose
     (runner.py, launch.py);
  6. score the saved weights with the harness's evaluator (evaluate.py);
  7. judge (`decide.judge`): nothing guarded changed (integrity.py), training neither read the
     validation data, crashed, ran out of time nor took more start-up than the baseline's allows
     (its cold start-up for a trial that changes what is compiled, else its noise-floor runs' warm
     one, plus a tolerance: trust.startup_rule; work outside its own clock), the evaluator found no
     tampering or look-ahead, and train.py claimed no val_bpb the evaluator did not measure; every
     violation is `rejected` with its reason, restored, and told to the agent in its next context;
  8. decide (`decide.screen_first_run`, then `decide.conclude`; the rules are trust.py's): the
     first run must beat the best commit's mean by more than the keep threshold (max(--min-delta,
     --noise-sigmas x noise std)); a candidate is trained and scored again with `--confirm-runs`
     other seeds (in `trial-NNNN/confirm-K/`), and kept only if every run and their mean clear
     the threshold; a gain far beyond anything kept so far is quarantined until another seed
     repeats it. The decision is written in words;
  9. record the trial (ledger.py), add it to the history, then move the worktree back to the best
     commit; the next trial's kind and repair follow from the history.

When the run ends by a limit, the baseline and the best are scored on the holdout split
(holdout.py), never used for decisions: `holdout_bpb` on their records and `holdout` in run.json,
flagged when val improved and holdout did not. The weights of the baseline and of the best trial
are kept for that (`trial-NNNN/model.pt`), and for `autoresearch eval` later; every other
trial's are deleted once it is recorded. The training in progress has its identity (pid, pgid,
start time, boot id, a marker in its environment) written to `runs/<tag>/training.pgid`, so a
later session kills it only if it is still ours.
Every state change is recorded before the worktree is reset, and the records are the source of
truth: each trial's `record.json` is written when it starts, once committed, and whole before its
line in trials.jsonl. A run killed at any point (Ctrl-C twice, SIGKILL, a power cut) resumes by
rebuilding what trials.jsonl lacks from those files, the trial refs and run.json's best (never
moving the branch back past a recorded keep), recording what was in flight as `interrupted`, and
resetting the worktree to the best kept commit.

What this does not protect against: a proposer that ignores the interrupt for a long time in C
code, the clock being changed during a run (limits use the monotonic clock, records use UTC wall
time), two machines running the same tag on a shared disk (the lock is a pid file), and a single
trial overshooting --max-cost (cost is checked between trials). The integrity checks guard
against an optimizer that drifts into breaking the measurement, not against a deliberate
attacker: see the limits in launch.py, integrity.py, evaluate.py and trust.py.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import datetime as _dt
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch import atomic, childenv, contract, decide, ledger, runner, sandbox, trust
from autoresearch.agent.base import HistoryRow, Proposal, ProposalContext, Proposer, Usage, absorb_partial
from autoresearch.decide import Failure
from autoresearch.errors import UserError
from autoresearch.gitops import Project, Workspace, branch_name
from autoresearch.history import KIND_BASELINE, KIND_NOISE, KIND_PROPOSAL, Best, History, HistorySettings
from autoresearch.holdout import score_run
from autoresearch.integrity import Guard, sha256_text
from autoresearch.knobs import set_knobs
from autoresearch.ledger import INTERRUPTED, KEEP, REJECTED, TrialRecord
from autoresearch.runconfig import RunConfig
from autoresearch.runlock import acquire_run_lock, release_run_lock
from autoresearch.verdict import Evaluator
from autoresearch.view import (
    EVALUATING,
    NOTE,
    PROGRESS,
    PROPOSAL,
    PROPOSAL_INVALID,
    RUN_STARTED,
    RUN_STOPPED,
    TRAINING,
    TRIAL_FINISHED,
    TRIAL_STARTED,
    Event,
    NullView,
    View,
)

EXIT_INTERRUPTED = 130
TRAINING_GROUP_FILE = "training.pgid"  # the process group of the training in progress
WEIGHTS_FILE = "model.pt"
MAX_AGENT_FAILURES = 5  # consecutive proposer exceptions before the run stops


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def trial_dir_name(trial: int) -> str:
    return f"trial-{trial:04d}"


# --- Stopping ----------------------------------------------------------------------------------


class StopControl:
    """Ctrl-C and SIGTERM: the first asks the run to stop cleanly, the second leaves at once.

    While the loop waits on something it can abandon (the agent, the evaluator, a back-off), the
    first signal raises KeyboardInterrupt right there; during training the runner polls
    `requested` and kills the process group; during git and record writes it is only noted and
    acted on at the next step, so those are never torn. The second signal does nothing in the
    handler but write one byte to a pipe: a watchdog thread wakes on it, kills the training group,
    marks run.json interrupted and calls os._exit. The handler itself takes no lock, so it cannot
    deadlock on one the interrupted code holds (rich's console lock, a logging lock); the records
    stay consistent because resuming reconciles them (as after SIGKILL).

    SIGHUP (the terminal went away: an SSH connection dropped) does not stop the run: standard
    output and error are pointed at /dev/null so that nothing fails writing to a dead terminal,
    and the night goes on; the records are unaffected. Run under tmux or nohup to keep watching.
    """

    def __init__(self) -> None:
        self.requested = False
        self.reason: str | None = None
        self.signals = 0
        self.hung_up = False
        self._interruptible = False
        self.on_hard_exit: Callable[[], None] | None = None
        self._previous: dict[int, object] = {}
        self._wake: tuple[int, int] | None = None  # the self-pipe the watchdog thread reads

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._wake = os.pipe()
        os.set_blocking(self._wake[1], False)
        threading.Thread(target=self._watch, args=(self._wake[0],), name="autoresearch-hard-exit",
                         daemon=True).start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._hang_up)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()
        if self._wake is not None:
            os.close(self._wake[1])  # the watchdog reads end-of-file and returns without exiting
            self._wake = None

    def _watch(self, read_end: int) -> None:
        try:
            woken = os.read(read_end, 1)
        finally:
            os.close(read_end)
        if not woken:
            return
        if self.on_hard_exit is not None:
            with contextlib.suppress(BaseException):
                self.on_hard_exit()
        os._exit(EXIT_INTERRUPTED)

    def _handle(self, signum: int, frame: object) -> None:
        self.signals += 1
        if self.signals >= 2:
            if self._wake is not None:
                with contextlib.suppress(BlockingIOError):  # already woken
                    os.write(self._wake[1], b"!")
                return
            os._exit(EXIT_INTERRUPTED)
        self.request(f"interrupted by {signal.Signals(signum).name}")
        if self._interruptible:
            self._interruptible = False
            raise KeyboardInterrupt

    def _hang_up(self, signum: int, frame: object) -> None:
        if self.hung_up:
            return
        self.hung_up = True
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os.close(null)

    def request(self, reason: str) -> None:
        if not self.requested:
            self.requested, self.reason = True, reason

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A stretch the first signal may abandon with KeyboardInterrupt."""
        if self.requested:
            raise KeyboardInterrupt
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def sleep(self, seconds: float) -> None:
        with self.interruptible():
            time.sleep(seconds)


# --- State -------------------------------------------------------------------------------------


@dataclass
class Repair:
    crashed_trial: int
    crashed_commit: str
    attempt: int  # 1 for the first repair
    tail: str  # the last lines of the crashed trial's log


@dataclass
class RunOutcome:
    tag: str
    run_dir: Path
    status: str  # finished | interrupted
    stop_reason: str
    best: Best
    baseline_val_bpb: float | None
    trials_this_session: int
    exit_code: int
    holdout: dict | None = None  # run.json's `holdout` when it was scored at the end of the run


class AgentFailure(Exception):
    """The proposer raised: recorded as a rejected trial; `fatal` stops the run."""

    def __init__(self, reason: str, fatal: UserError | None = None):
        super().__init__(reason)
        self.reason, self.fatal = reason, fatal


@dataclass
class _Proposed:
    source: str | None  # the valid train.py, or None when every attempt was invalid
    invalid_reason: str | None = None
    usage: Usage = field(default_factory=Usage)


# --- The night ---------------------------------------------------------------------------------


class Night:
    """One session of a run (a fresh start or a resume): set up, loop trials, close."""

    def __init__(self, config: RunConfig, proposer: Proposer | None, view: View, evaluator: Evaluator | None,
                 stop: StopControl):
        self.config = config
        self.view = view
        self.stop = stop
        self._proposer = proposer
        self._evaluator = evaluator
        self.project = Project(config.project_dir)
        self.run_dir = self.project.path / "runs" / config.tag
        # the run's records and everything derived from them (history.py); set from the records on open
        self.history = History.of([], HistorySettings.of(config), "")
        self.rejection_notes: list[str] = []
        self.repair: Repair | None = None
        self.agent_failures = 0
        self.session_started = time.monotonic()
        self.session_trials = 0
        self.session_trial_seconds: list[float] = []
        self.active_training_group: int | None = None
        self.last_program_md: str | None = None
        self.failed = False  # the run stopped because something failed (not a limit, not the user)
        self.state: dict = {}
        self.workspace: Workspace
        self.guard: Guard

    @property
    def records(self) -> tuple[TrialRecord, ...]:
        return self.history.records

    @records.setter
    def records(self, records: list[TrialRecord]) -> None:
        """The records as resuming rebuilt them (`_reconcile`): the history starts again from them."""
        self.history = History.of(records, self.history.settings, self.state.get("baseline_commit", ""))

    @property
    def best(self) -> Best:
        return self.history.best

    @property
    def seen_sources(self) -> dict[str, int]:
        """sha256 of train.py -> the first trial with it (no source is tried twice in a run)."""
        return self.history.seen_sources()

    # -- set-up

    def open(self) -> None:
        config = self.config
        state = ledger.read_run_state(self.run_dir)
        leftovers = self._leftovers() if state is None else []
        if state is None and leftovers and not config.resume:
            raise UserError(f"{self.run_dir / ledger.RUN_FILE} is missing but run {config.tag} left "
                            f"{', '.join(leftovers)}; `autoresearch run --resume --tag {config.tag}` rebuilds "
                            "run.json from them and continues the run, or choose another --tag")
        if state is None and config.resume and not leftovers:
            raise UserError(f"there is no run to resume at {self.run_dir} (start one without --resume)")
        if state is None and leftovers:
            state = self._rebuilt_state()
        fresh = state is None
        if fresh:
            self.project.check_committed()
        self._check_dataset()
        from autoresearch.agent.factory import prepare_proposer

        # the key, endpoint and model (and whether --max-cost can be kept) are said now, not after the baseline
        self._proposer = prepare_proposer(self.config, self._proposer, notes_path=self.run_dir / "notes.md")
        self.project.ensure_runs_ignored()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        baseline_commit = self.project.head_commit() if fresh else state["baseline_commit"]
        self.workspace = Workspace.open_or_create(self.project, config.tag, self.run_dir / "worktree",
                                                  start_commit=baseline_commit if fresh else None)
        if fresh and config.baseline_knobs:
            baseline_commit = self._apply_baseline_knobs()
        self.guard = Guard(self.workspace.path, Path(config.data_dir or ""), guard_package=config.guard_package)
        now = utc_now()
        self.state = state or {"tag": config.tag, "branch": branch_name(config.tag), "created_at": now,
                               "baseline_commit": baseline_commit, "noise_floor": None, "sessions": 0}
        self.state.update(project_dir=str(self.project.path), worktree=str(self.workspace.path),
                          status=ledger.RUN_RUNNING, stop_reason=None, config=config.summary(),
                          sessions=int(self.state.get("sessions", 0)) + 1, pid=os.getpid())
        self._reconcile()
        self._save_state()
        verb = "starting" if fresh else "resuming"
        self.emit(RUN_STARTED, message=f"{verb} run {config.tag} on branch {branch_name(config.tag)} "
                                       f"(worktree {self.workspace.path}); next trial {self.next_trial():04d}",
                  tag=config.tag, resumed=not fresh, totals=self.totals())

    def _leftovers(self) -> list[str]:
        """What a run of this tag left behind, in words (for a run whose run.json is missing)."""
        found = []
        if (self.run_dir / ledger.TRIALS_FILE).is_file():
            found.append(ledger.TRIALS_FILE)
        trial_dirs = sorted(self.run_dir.glob("trial-*"))
        if trial_dirs:
            found.append(f"{len(trial_dirs)} trial director{'y' if len(trial_dirs) == 1 else 'ies'}")
        if self.project.branch_exists(self.config.tag):
            found.append(f"the branch {branch_name(self.config.tag)}")
        refs = self.project.trial_refs(self.config.tag)
        if refs:
            found.append(f"{len(refs)} trial ref{'s' if len(refs) != 1 else ''}")
        return found

    def _rebuilt_state(self) -> dict:
        """run.json for a run whose file was lost: the baseline commit from trial 0's records or ref."""
        baseline = None
        first = ledger.read_trial_file(self.run_dir / trial_dir_name(0))
        if first is not None and first.record.commit:
            baseline = first.record.commit
        if baseline is None:
            zero = [r for r in ledger.read_trials(self.run_dir).records if r.trial == 0 and r.commit]
            baseline = zero[0].commit if zero else self.project.trial_refs(self.config.tag).get(0)
        if baseline is None and self.project.branch_exists(self.config.tag):
            baseline = self.project.branch_commit(self.config.tag)  # nothing was trained yet
        if baseline is None:
            raise UserError(f"run {self.config.tag}: run.json is missing and no record, ref or branch names its "
                            "baseline commit; choose another --tag")
        self.emit(NOTE, message=f"{ledger.RUN_FILE} was missing: rebuilt from the run's records and refs")
        created = first.record.started_at if first is not None else utc_now()
        return {"tag": self.config.tag, "branch": branch_name(self.config.tag), "created_at": created,
                "baseline_commit": baseline, "noise_floor": None, "sessions": 0, "rebuilt_at": utc_now()}

    def _apply_baseline_knobs(self) -> str:
        """Rewrite the baseline's knobs (the demo shrinks the model for a CPU) as the run's first commit."""
        path = self.workspace.path / "train.py"
        source = set_knobs(path.read_text(encoding="utf-8"), self.config.baseline_knobs)
        atomic.write_text_atomic(path, source)
        changes = ", ".join(f"{name} = {value!r}" for name, value in self.config.baseline_knobs.items())
        return self.workspace.commit_train_py(f"baseline knobs for this run: {changes}", None)

    def _check_dataset(self) -> None:
        data_dir = Path(self.config.data_dir or contract.dataset_dir())
        if not (data_dir / "manifest.json").is_file():
            raise UserError(f"no prepared dataset at {data_dir}; run `autoresearch prepare` "
                            "(or pass --dataset / set AUTORESEARCH_DATA_DIR)")
        try:
            from autoresearch.data.manifest import default_hash_cache, verify_dataset
        except ImportError:  # the data package is optional for this check
            return
        # every byte is hashed once; later starts re-read only files whose stat changed
        verify_dataset(data_dir, check_hashes=True, hash_cache=default_hash_cache(data_dir))

    def _acquire_lock(self) -> None:
        acquire_run_lock(self.run_dir)

    def release_lock(self) -> None:
        release_run_lock(self.run_dir)

    def _reconcile(self) -> None:
        """Make records, refs and the worktree agree after any kind of stop, then load the state."""
        note = runner.kill_recorded_training(self.run_dir / TRAINING_GROUP_FILE)  # only if still ours
        if note:
            self.emit(NOTE, message=note)
        ledger.close_torn_lines(self.run_dir)
        log = ledger.read_trials(self.run_dir)
        if log.torn_lines:
            self.emit(NOTE, message=f"{ledger.TRIALS_FILE}: skipped unreadable line(s) {log.torn_lines}")
        by_trial: dict[int, TrialRecord] = {}
        for record in log.records:
            by_trial.setdefault(record.trial, record)
        refs = self.workspace.trial_refs()
        dirs = {int(path.name[6:]) for path in self.run_dir.glob("trial-*") if path.name[6:].isdigit()}
        recovered = []
        for number in sorted((set(refs) | dirs) - set(by_trial)):
            kept_before = [r for r in by_trial.values() if r.trial < number and r.status == KEEP]
            best_before = max(kept_before, key=lambda r: r.trial).val_bpb if kept_before else None
            record = self._recovered_record(number, refs.get(number, ""), best_before)
            ledger.append_trial(self.run_dir, record)  # a lost line comes back; nothing is rewritten
            by_trial[number] = record
            recovered.append(number)
        if recovered:
            self.emit(NOTE, message=f"recorded trial(s) {', '.join(map(str, recovered))} from what survived "
                                    "(their record.json, trial ref and files)")
        self.records = sorted(by_trial.values(), key=lambda record: record.trial)
        # results.tsv is appended after trials.jsonl: a kill between the two lost a row; rebuild it
        ledger.rewrite_results(self.run_dir, self.records)
        # the best, the sources tried and the repair to plan follow from the records (self.history)
        self._refuse_to_move_backwards()
        self._plan_repair()
        self.workspace.remove_stale_locks()
        if self.workspace.head() != self.best.commit or self.workspace.changed_files():
            self.workspace.reset_to(self.best.commit)

    def _recovered_record(self, number: int, commit: str, best_before: float | None) -> TrialRecord:
        """The record of a trial that trials.jsonl lacks, from the evidence that survived.

        Its own record.json, complete, is the trial as it was recorded (the jsonl line was lost or
        torn). One still in progress, or none, makes it `interrupted`, described by what the
        harness knew when it stopped (kind, seed, description) and otherwise by its ref's commit.
        The best trial named by run.json is a keep even when every other record of it is gone, so
        a resume never moves the branch back past a recorded keep.
        """
        trial_dir = self.run_dir / trial_dir_name(number)
        trial_file = ledger.read_trial_file(trial_dir)
        if trial_file is not None and not trial_file.in_progress:
            return trial_file.record
        best = self.state.get("best") or {}
        if best.get("trial") == number and best.get("commit") and best.get("val_bpb") is not None \
                and best["commit"] in (commit, trial_file.record.commit if trial_file else None):
            return self._recovered_keep(number, best, trial_file)
        now = utc_now()
        if trial_file is not None:
            record = trial_file.record
            record.commit = record.commit or commit
            if record.trial > 0 and record.commit and record.commit == self.state.get("baseline_commit") \
                    and not record.extra.get("baseline"):
                record.extra["noise_floor"] = True
        else:
            record = TrialRecord(trial=number, status=INTERRUPTED, description="(proposal interrupted)",
                                 parent=commit, commit=commit, started_at=now, ended_at=now, seed=self.config.seed)
            if commit:
                first_parent, _, subject = self.workspace.commit_info(commit)
                record.parent = first_parent if number > 0 and first_parent else commit
                record.description = subject or "(unrecorded)"
                record.train_py_sha256 = sha256_text(self.workspace.show(commit, "train.py"))
            if commit and commit == self.state.get("baseline_commit"):
                # only the baseline and its noise-floor runs train the baseline commit
                if number == 0 or not any(r.extra.get("baseline") for r in self.records):
                    record.extra["baseline"], record.description = True, "baseline"
                else:
                    record.extra["noise_floor"], record.description = True, "noise floor: baseline"
        record.status, record.ended_at = INTERRUPTED, now
        record.val_bpb = record.delta = None
        record.failure_reason = "the harness stopped before this trial was recorded (recorded when the run resumed)"
        if record.description == "(proposing)":
            record.description = "(proposal interrupted)"
        elif (trial_file is not None or record.extra.get("baseline") or record.extra.get("noise_floor")) \
                and not record.description.endswith("interrupted)"):
            record.description = f"{record.description} (interrupted)"
        record.best_val_bpb = best_before
        for weights in trial_dir.glob(f"**/{WEIGHTS_FILE}"):  # an unrecorded trial's weights are never used
            weights.unlink(missing_ok=True)
        return record

    def _recovered_keep(self, number: int, best: dict, trial_file: ledger.TrialFile | None) -> TrialRecord:
        """run.json's best trial, whose records were lost: a keep, as run.json recorded it."""
        now = utc_now()
        commit = best["commit"]
        record = trial_file.record if trial_file is not None else TrialRecord(
            trial=number, status=KEEP, description="", parent="", commit=commit, started_at=now, ended_at=now)
        first_parent, _, subject = self.workspace.commit_info(commit)
        record.status, record.commit, record.val_bpb = KEEP, commit, float(best["val_bpb"])
        record.parent = record.parent or (first_parent if number > 0 else commit)
        record.description = record.description if record.description not in ("", "(proposing)") else subject
        record.best_val_bpb, record.ended_at = record.val_bpb, record.ended_at or now
        record.train_py_sha256 = record.train_py_sha256 or sha256_text(self.workspace.show(commit, "train.py"))
        record.decision = "recovered on resume: run.json names this trial as the best (its record was lost)"
        if number == 0 or commit == self.state.get("baseline_commit"):
            record.extra["baseline"] = True
        return record

    def _refuse_to_move_backwards(self) -> None:
        """run.json's best must still be the best: resetting past a recorded keep would lose it."""
        recorded = (self.state.get("best") or {}).get("commit")
        if not recorded or recorded == self.best.commit or not self.workspace.commit_exists(recorded):
            return
        if self.workspace.is_ancestor(self.best.commit, recorded):
            raise UserError(f"run.json names {recorded[:7]} (trial {self.state['best'].get('trial')}) as the best, "
                            f"but no surviving record of the run keeps it; resuming would move the branch back to "
                            f"{self.best.commit[:7]}. Restore {ledger.TRIALS_FILE} or that trial's "
                            f"{ledger.TRIAL_RECORD_FILE}, then resume")

    # -- bookkeeping: the answers come from the records (history.py)

    def next_trial(self) -> int:
        return self.history.next_trial()

    def next_kind(self) -> tuple[str, int]:
        """What the next trial is (baseline, noise-floor run or proposal) and the seed it trains with."""
        return self.history.next_kind()

    def baseline_val_bpb(self) -> float | None:
        return self.history.baseline_val_bpb()

    def baseline_record(self) -> TrialRecord | None:
        return self.history.baseline_record()

    def totals(self) -> dict:
        return self.history.totals()

    def emit(self, kind: str, trial: int | None = None, message: str = "", **data: object) -> None:
        self.view.emit(Event(kind, trial, message, dict(data)))

    def _save_state(self) -> None:
        self.state.update(updated_at=utc_now(), best=self.best.as_dict())
        ledger.write_run_state(self.run_dir, self.state)

    def limit_reached(self) -> str | None:
        config = self.config
        if self.stop.requested:
            return self.stop.reason or "interrupted"
        if config.max_trials is not None and self.history.counted_trials() >= config.max_trials:
            return f"reached --max-trials {config.max_trials}"
        if config.max_cost is not None and self.history.cost_usd() >= config.max_cost:
            return f"reached --max-cost ${config.max_cost:g}"
        if config.hours is not None:
            elapsed = time.monotonic() - self.session_started
            limit = config.hours * 3600
            if elapsed >= limit:
                return f"reached --hours {config.hours:g}"
            if self.session_trial_seconds:
                typical = sorted(self.session_trial_seconds)[len(self.session_trial_seconds) // 2]
                if elapsed + typical > limit:
                    return (f"another trial (about {typical:.0f} s) would not finish within "
                            f"--hours {config.hours:g}")
        return None

    # -- the agent

    def proposer(self) -> Proposer:
        if self._proposer is None:  # open() builds it (with the checks); this serves a Night used without open()
            from autoresearch.agent.factory import proposer_for

            self._proposer = proposer_for(self.config, notes_path=self.run_dir / "notes.md")
        return self._proposer

    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            from autoresearch.evaluate import run_evaluator

            self._evaluator = run_evaluator
        return self._evaluator

    # -- the loop

    def loop(self) -> str:
        """Run trials until something ends the run; returns why it ended."""
        while True:
            reason = self.limit_reached()
            if reason:
                return reason
            record = self.run_trial(self.next_trial())
            self.session_trials += 1
            if record.total_seconds:
                self.session_trial_seconds.append(record.total_seconds)
            if record.status == INTERRUPTED:
                return self.stop.reason or "interrupted"
            if record.extra.get("stops_run"):
                self.failed = True
                return str(record.extra["stops_run"])
            if record.extra.get("agent_error"):  # back off before asking a failing agent again
                self.stop.sleep(min(60.0, 2.0 ** self.agent_failures))

    # -- one trial: the story in the module docstring

    def run_trial(self, number: int) -> TrialRecord:
        started = time.monotonic()
        trial_dir = self.run_dir / trial_dir_name(number)
        trial_dir.mkdir(parents=True, exist_ok=True)
        kind, seed = self.next_kind()
        repair = self.repair if kind == KIND_PROPOSAL else None
        description = {KIND_BASELINE: "baseline", KIND_NOISE: f"noise floor: baseline, seed {seed}"}.get(kind, "(proposing)")
        record = TrialRecord(trial=number, status=INTERRUPTED, description=description, parent=self.best.commit,
                             commit="", started_at=utc_now(), ended_at="", seed=seed,
                             repair_attempt=repair.attempt if repair else 0)
        record.isolation = sandbox.isolation_mode()  # what protects this trial, whether or not its code runs
        if kind == KIND_BASELINE:
            record.extra["baseline"] = True
        elif kind == KIND_NOISE:
            record.extra["noise_floor"] = True
        self._write_trial_file(record, trial_dir, in_progress=True)
        label = record.description if kind != KIND_PROPOSAL else (
            f"repair {repair.attempt} of trial {repair.crashed_trial}" if repair else "proposing")
        self.emit(TRIAL_STARTED, number, label, trial_kind=kind, seed=seed, repair_attempt=record.repair_attempt,
                  repairs_trial=repair.crashed_trial if repair else None)
        fatal: UserError | None = None
        try:
            fatal = self._steps(record, kind, repair, trial_dir)
        except KeyboardInterrupt:
            runner.kill_child_groups()  # an evaluator or agent subprocess in a session of its own
            record.status = INTERRUPTED
            record.failure_reason = self.stop.reason or "interrupted"
            self.stop.request(record.failure_reason)
        except UserError as error:  # the harness cannot go on (say, the evaluator cannot start)
            record.status, record.failure_reason = INTERRUPTED, f"harness error: {error}"
            fatal = error
        finally:
            self.active_training_group = None
        self._finish(record, trial_dir, started)  # 8. record, then reset
        if fatal is not None:
            raise fatal
        return record

    def _steps(self, record: TrialRecord, kind: str, repair: Repair | None,
               trial_dir: Path) -> UserError | None:
        """Steps 1-8 of a trial; fills in `record`. Returns a UserError that must end the run, if any."""
        baseline = kind != KIND_PROPOSAL  # the baseline and its noise-floor runs train the committed train.py
        # 1. program.md, read afresh
        program_md = self._read_program_md()
        record.program_md_sha256 = sha256_text(program_md)
        # 2-3. propose and validate (the baseline runs the committed train.py as it is)
        if baseline:
            source = (self.workspace.path / "train.py").read_text(encoding="utf-8")
        else:
            try:
                proposed = self._propose(record, program_md, repair, trial_dir)
            except AgentFailure as failure:
                record.status, record.failure_reason = REJECTED, f"agent error: {failure.reason}"
                record.extra["agent_error"] = True
                if failure.fatal is None and self.agent_failures >= MAX_AGENT_FAILURES:
                    record.extra["stops_run"] = f"the agent failed {self.agent_failures} times in a row: " \
                                                f"{failure.reason}"
                return failure.fatal
            if proposed.source is None:
                record.status, record.failure_reason = REJECTED, proposed.invalid_reason
                return None
            source = proposed.source
        # 4. commit
        record.train_py_sha256 = sha256_text(source)
        self._commit(record, baseline, trial_dir)
        self._write_trial_file(record, trial_dir, in_progress=True)
        # 5-7. train, score, judge
        training, evaluation, failure = self._train_and_score(record, trial_dir, record.seed, kind)
        self._note_training(record, training)
        if failure is not None:
            self._apply(record, failure)
            return None
        record.val_bpb = float(evaluation.bpb)  # type: ignore[attr-defined]
        # 8. decide
        self._decide(record, trial_dir, kind)
        return None

    def _train_and_score(self, record: TrialRecord, run_dir: Path, seed: int,
                         kind: str) -> tuple[runner.TrainingResult, object | None, Failure | None]:
        """Steps 5-7 for one seed: train under the guard, score unless something already failed, judge."""
        before = self.guard.snapshot()
        training = self._train(record, run_dir, seed)
        changes = self.guard.changes(before)  # the evaluator's row cache included: training must not touch it
        evaluation = None
        if training.status == runner.OK and not changes and self._overhead_failure(training, kind) is None:
            evaluation = self._evaluate(record, run_dir)
            # train.py's module code runs again inside the evaluator: check once more
            after_evaluation = self.guard.changes(before, eval_cache=False)
            changes += [change for change in after_evaluation if change not in changes]
        return training, evaluation, self._failure(training, evaluation, changes, kind)

    def _read_program_md(self) -> str:
        try:
            text = self.project.read_file("program.md")
        except (OSError, UnicodeDecodeError) as error:
            if self.last_program_md is not None:  # the human may be in the middle of saving it
                self.emit(NOTE, message=f"program.md unreadable ({error}); using the last version read")
                return self.last_program_md
            raise UserError(f"{self.project.path / 'program.md'} cannot be read: {error}") from error
        self.last_program_md = text
        return text

    def _propose(self, record: TrialRecord, program_md: str, repair: Repair | None, trial_dir: Path) -> _Proposed:
        """Ask the agent for a valid train.py, retrying invalid proposals with the reason."""
        worktree = self.workspace.path
        best_source = self.workspace.show(self.best.commit, "train.py")
        prepare_py = (worktree / "prepare.py").read_text(encoding="utf-8")
        notes = list(self.rejection_notes)
        usage, transcript = Usage(), []
        reason = None
        agent_seconds = 0.0
        try:
            for attempt in range(1 + self.config.proposal_retries):
                self._fresh_worktree(repair)
                parent_source = (worktree / "train.py").read_text(encoding="utf-8")
                context = ProposalContext(
                    worktree=worktree, program_md=program_md, prepare_py=prepare_py, best_train_py=best_source,
                    best_val_bpb=self.best.val_bpb, history=self._history(), trial_number=record.trial,
                    last_crash_tail=repair.tail if repair else None,
                    repair_attempt=repair.attempt if repair else 0, rejection_notes=notes, trial_dir=trial_dir)
                clock = time.monotonic()
                try:
                    with self.stop.interruptible():
                        proposal: Proposal = self.proposer().propose(context)
                except KeyboardInterrupt as interrupt:
                    absorb_partial(interrupt, usage, transcript)  # paid turns before the interrupt count
                    raise
                except UserError as error:
                    absorb_partial(error, usage, transcript)
                    raise AgentFailure(str(error), fatal=error) from error
                except Exception as error:  # an agent bug or outage must not end the night at once
                    self.agent_failures += 1
                    absorb_partial(error, usage, transcript)
                    transcript.append({"role": "harness", "event": "agent_error", "attempt": attempt,
                                       "error": f"{type(error).__name__}: {error}"})
                    raise AgentFailure(f"{type(error).__name__}: {error}") from error
                finally:
                    agent_seconds += time.monotonic() - clock
                self.agent_failures = 0
                usage.add(proposal.usage)
                transcript.extend(proposal.transcript)
                record.description = proposal.description
                self.emit(PROPOSAL, record.trial, proposal.description, description=proposal.description,
                          agent_seconds=agent_seconds)
                reason = self._validate(parent_source, best_source)
                if reason is None:
                    self.rejection_notes = []
                    return _Proposed((worktree / "train.py").read_text(encoding="utf-8"), None, usage)
                transcript.append({"role": "harness", "event": "invalid_proposal", "attempt": attempt,
                                   "reason": reason})
                self.emit(PROPOSAL_INVALID, record.trial, f"invalid proposal: {reason}", reason=reason,
                          attempt=attempt)
                notes = [*notes, f"Your previous proposal for this trial was invalid and was undone: {reason}"]
            self._fresh_worktree(None)
            return _Proposed(None, reason, usage)
        finally:
            record.tokens = usage.as_tokens()
            record.cost_usd = usage.cost_usd
            if not usage.cost_known:  # tokens from a model without prices: cost_usd is only the priced part
                record.extra["cost_unknown"] = True
            record.agent_seconds = agent_seconds
            atomic.write_json_atomic(trial_dir / "transcript.json",
                                     {"trial": record.trial, "messages": transcript})

    def _fresh_worktree(self, repair: Repair | None) -> None:
        """The worktree at the best commit, clean; for a repair, with the crashed train.py in it."""
        if self.workspace.head() != self.best.commit or self.workspace.changed_files():
            self.workspace.reset_to(self.best.commit)
        if repair is not None:
            self.workspace.checkout_file(repair.crashed_commit, "train.py")

    def _validate(self, parent_source: str, best_source: str) -> str | None:
        """Why the worktree's proposal is invalid, or None when it may be committed."""
        changed = self.workspace.changed_files()
        others = [name for name in changed if name != "train.py"]
        if others:
            return f"changed {', '.join(others)}: only train.py may be edited"
        path = self.workspace.path / "train.py"
        if not path.is_file():
            return "train.py was deleted"
        source = path.read_text(encoding="utf-8", errors="replace")
        try:
            ast.parse(source, filename="train.py")
        except SyntaxError as error:
            return f"train.py does not parse: {error.msg} (line {error.lineno})"
        if source == best_source or (not changed and source == parent_source):
            return "train.py is unchanged: the edit did not apply or changed nothing"
        earlier = self.seen_sources.get(sha256_text(source))
        if earlier is not None:
            return f"train.py is identical to trial {earlier}'s; propose something new"
        return None

    def _history(self) -> list[HistoryRow]:
        return [HistoryRow(r.trial, r.description, r.val_bpb, r.delta, r.status) for r in self.records]

    def _commit(self, record: TrialRecord, baseline: bool, trial_dir: Path) -> None:
        if baseline:
            record.commit = record.parent = self.best.commit
            self.workspace.set_trial_ref(record.trial, record.commit)
            diff = ""
        else:
            message = f"{record.description}\n\nautoresearch trial {record.trial:04d} of run {self.config.tag}"
            if record.repair_attempt and self.repair is not None:
                message += f" (repair {record.repair_attempt} of trial {self.repair.crashed_trial})"
            record.commit = self.workspace.commit_train_py(message, record.trial)
            diff = self.workspace.diff(record.parent, record.commit)
        atomic.write_text_atomic(trial_dir / "diff.patch", diff)
        source = (self.workspace.path / "train.py").read_text(encoding="utf-8")
        atomic.write_text_atomic(trial_dir / "train.py", source)

    def _training_env(self, trial_dir: Path, seed: int) -> dict[str, str]:
        config = self.config
        data_dir = Path(config.data_dir or contract.dataset_dir())
        protected = [str(data_dir / f"{split}{suffix}")
                     for split in ("val", "holdout") for suffix in (".bin", ".docs.npy")]
        protected.append(str(data_dir / "eval-rows-*"))  # the evaluator's packed validation rows
        cache = self.run_dir / "compile-cache"  # run-private: the baseline's first run compiles cold
        policy = sandbox.training_policy(
            abi=sandbox.landlock_abi(), worktree=self.workspace.path, trial_dir=trial_dir, data_dir=data_dir,
            compile_cache=cache, python_paths=sandbox.python_paths(), private_roots=[self.run_dir, self.project.path],
            devices=sandbox.device_files())
        env = childenv.child_env({
            contract.ENV_TIME_BUDGET: f"{config.budget:g}",
            contract.ENV_SEED: str(seed),
            contract.ENV_DATA_DIR: str(data_dir),
            contract.ENV_MAX_SEQ_LEN: str(config.seq_len),
            contract.ENV_DEVICE: config.device,
            contract.ENV_WEIGHTS_PATH: str(trial_dir / WEIGHTS_FILE),
            contract.ENV_TRAIN_ONLY: "1",
            contract.ENV_EVAL_TOKENS: str(config.eval_tokens or contract.DEFAULT_EVAL_TOKENS),
            "AUTORESEARCH_PROTECTED_PATHS": os.pathsep.join(protected),
            sandbox.ENV_POLICY: policy.to_json(),
            "TORCHINDUCTOR_CACHE_DIR": str(cache / "torch-compile"),
            "TRITON_CACHE_DIR": str(cache / "triton"),
            "CUDA_CACHE_PATH": str(cache / "cuda"),
        })
        env.pop(contract.ENV_DATASET, None)  # the data dir is explicit
        return env

    def _train(self, record: TrialRecord, trial_dir: Path, seed: int) -> runner.TrainingResult:
        """Train one seed of the trial in `trial_dir` (its log and weights go there)."""
        seed_note = "" if seed == self.config.seed else f", seed {seed}"
        self.emit(TRAINING, record.trial, f"{record.description} ({record.commit[:7]}{seed_note})", commit=record.commit)
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / WEIGHTS_FILE).unlink(missing_ok=True)

        def on_progress(progress: runner.Progress) -> None:
            self.emit(PROGRESS, record.trial, **dataclasses.asdict(progress))

        def on_start(identity: runner.ProcessIdentity) -> None:
            self.active_training_group = identity  # type: ignore[assignment]
            record.isolation = sandbox.isolation_mode()
            atomic.write_text_atomic(self.run_dir / TRAINING_GROUP_FILE, identity.to_json() + "\n")

        result = runner.run_training(
            self.workspace.path / "train.py", env=self._training_env(trial_dir, seed), log_path=trial_dir / "train.log",
            wall_limit=self._wall_limit(), on_progress=on_progress, on_start=on_start,
            should_stop=lambda: self.stop.requested, kill_grace=self.config.kill_grace)
        self.active_training_group = None
        (self.run_dir / TRAINING_GROUP_FILE).unlink(missing_ok=True)
        record.training_seconds = round((record.training_seconds or 0.0) + result.seconds, 3)  # all seeds
        if self.config.device in ("auto", "cuda") and not runner.wait_for_gpu_release(result.pids):
            self.emit(NOTE, record.trial, "the GPU still lists this trial's processes after 30 s; going on")
        if result.status == runner.INTERRUPTED:
            raise KeyboardInterrupt
        return result

    def _note_training(self, record: TrialRecord, result: runner.TrainingResult) -> None:
        """What train.py claimed about its first run (kept as claims) and a flag where the clock disagrees."""
        record.claimed_val_bpb = runner.float_or_none(result.summary.get("val_bpb"))
        record.claimed_training_seconds = runner.float_or_none(result.summary.get("training_seconds"))
        vram_mb = runner.float_or_none(result.summary.get("peak_vram_mb"))
        record.peak_memory_gb = round(vram_mb / 1024, 3) if vram_mb is not None else None  # claimed by train.py
        if result.summary:
            record.extra["claimed"] = result.summary
        if result.unkilled:  # processes that did not die after SIGKILL (stuck in the kernel): on the record
            record.extra["unkilled"] = list(result.unkilled)
        if result.last_progress is not None:
            record.extra["last_step"] = result.last_progress.step
        claimed = record.claimed_training_seconds
        if claimed is not None and claimed > result.seconds + 1.0:
            record.extra.setdefault("flags", []).append(
                f"train.py claimed training_seconds {claimed:g} but its process ran {result.seconds:.1f} s "
                "by the harness's clock (the harness's number is recorded)")

    def _evaluate(self, record: TrialRecord, trial_dir: Path) -> object:
        self.emit(EVALUATING, record.trial, "scoring val_bpb")
        spent = record.evaluation_seconds or 0.0
        clock = time.monotonic()
        with self.stop.interruptible():
            result = self.evaluator()(
                self.workspace.path / "train.py", trial_dir / WEIGHTS_FILE, Path(self.config.data_dir or ""),
                split="val", tokens=self.config.eval_tokens, seq_len=self.config.seq_len,
                device=self.config.device, timeout=self.config.eval_timeout, log_path=trial_dir / "eval.log",
                private_roots=(self.run_dir, self.project.path), compile_cache=self.run_dir / "compile-cache")
        record.evaluation_seconds = round(spent + time.monotonic() - clock, 3)  # all seeds
        payload = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(vars(result))
        atomic.write_json_atomic(trial_dir / "eval.json", payload)
        return result

    def _failure(self, training: runner.TrainingResult, evaluation: object | None, changes: list,
                 kind: str) -> Failure | None:
        """Step 7: why this run does not count (decide.judge); None when it scored."""
        guarded = {change.name for change in changes}
        # Any other tracked file of the worktree changed counts too (new untracked files are just cleaned).
        tracked = [name for name in self.workspace.changed_files()
                   if name not in guarded and self._is_tracked(name)]
        return decide.judge(training, evaluation, changes, tracked, kind, self._startup(kind, training))

    def _overhead_failure(self, training: runner.TrainingResult, kind: str) -> Failure | None:
        """Training work outside train.py's own clock: more start-up than the reference allows (decide.py, trust.py)."""
        return decide.overhead_failure(training, kind, self._startup(kind, training))

    def _startup(self, kind: str, training: runner.TrainingResult) -> decide.StartUp:
        """What a trial's start-up is measured against: the baseline's cold and warm start-ups, the tolerance.

        A proposal that trained and changes what is compiled (trust.compiles_cold: its train.py
        against the baseline's) is compared with the cold one.
        """
        baseline = self.history.baseline_record()
        cold = kind == KIND_PROPOSAL and training.status == runner.OK and baseline is not None and trust.compiles_cold(
            self.workspace.show(baseline.commit, "train.py"), (self.workspace.path / "train.py").read_text("utf-8"))
        return decide.StartUp(baseline.training_seconds if baseline else None,
                              self.history.noise_floor_training_seconds(), cold, self.config.budget,
                              self.config.overhead_tolerance)

    def _wall_limit(self) -> float:
        """Budget plus start-up allowance: --startup-allowance, else from the baseline's cold start-up (trust.py)."""
        baseline = self.history.baseline_record()
        cold = None if baseline is None or baseline.training_seconds is None else \
            max(0.0, baseline.training_seconds - self.config.budget)
        return self.config.budget + trust.startup_allowance(self.config.startup_allowance, cold)

    def _apply(self, record: TrialRecord, failure: Failure, prefix: str = "", run_dir: str = "") -> None:
        """A failed run on the record: its status and reason (the crash log under `run_dir`), the agent's note."""
        record.status, record.failure_reason = failure.status, prefix + failure.reason
        extra = dict(failure.extra)
        if run_dir and "crash_log" in extra:
            extra["crash_log"] = f"{run_dir}/{extra['crash_log']}"
        record.extra.update(extra)
        if failure.note:
            self.rejection_notes.append(f"Trial {record.trial} was rejected: {record.failure_reason}. {failure.note}")

    def _decide(self, record: TrialRecord, trial_dir: Path, kind: str) -> None:
        """Step 8: keep or discard a scored trial; decide.py decides, this runs the confirmation seeds it asks for."""
        val_bpb = float(record.val_bpb)  # type: ignore[arg-type]
        screening = decide.screen_against(self.history, kind, record.trial, record.seed,  # type: ignore[arg-type]
                                          val_bpb, rules=self._keep_rules())
        if screening.reference is not None:
            record.delta = screening.delta
            record.extra["reference_bpb"] = screening.reference
        if not screening.needs_confirmation:
            record.status, record.decision = screening.status, screening.decision  # type: ignore[assignment]
            return
        if screening.quarantined:
            record.extra["quarantined"] = screening.quarantined
        runs = [(record.seed, val_bpb)]
        record.extra["runs"] = [{"seed": record.seed, "val_bpb": val_bpb}]
        count = len(screening.confirmation_seeds)
        for index, seed in enumerate(screening.confirmation_seeds, start=1):
            self.emit(NOTE, record.trial, f"candidate: confirming with seed {seed} ({index} of {count})",
                      confirmation=index, confirmations=count, seed=seed)
            run_dir = f"confirm-{index}"
            training, evaluation, failure = self._train_and_score(record, trial_dir / run_dir, seed, kind)
            (trial_dir / run_dir / WEIGHTS_FILE).unlink(missing_ok=True)  # only a trial's first weights are kept
            if failure is not None:
                self._apply(record, failure, prefix=f"confirmation run (seed {seed}): ", run_dir=run_dir)
                return
            score = float(evaluation.bpb)  # type: ignore[attr-defined]
            runs.append((seed, score))
            record.extra["runs"].append({"seed": seed, "val_bpb": score, "training_seconds": round(training.seconds, 3)})
        conclusion = decide.conclude(screening, runs)  # type: ignore[arg-type]
        record.val_bpb, record.delta = conclusion.val_bpb, conclusion.delta
        record.status, record.decision = conclusion.status, conclusion.decision

    def _keep_rules(self) -> decide.KeepRules:
        config = self.config
        return decide.KeepRules(config.confirm_runs, config.quarantine_factor, config.quarantine_floor)

    def _is_tracked(self, name: str) -> bool:
        try:
            self.workspace.repo.git.ls_files("--error-unmatch", "--", name)
            return True
        except Exception:
            return False

    def _finish(self, record: TrialRecord, trial_dir: Path, started: float) -> TrialRecord:
        """Step 8: record the trial, move the best, reset the worktree to it, plan a repair."""
        record.ended_at = utc_now()
        record.total_seconds = round(time.monotonic() - started, 3)
        stop_reason = decide.stops_run(record, self.history.noise_failures(record.seed))
        if stop_reason:
            record.extra["stops_run"] = stop_reason
        previous = self.best
        recorded = self.history.add(record)
        record.best_val_bpb = recorded.best.val_bpb
        # Record first: a stop between here and the reset is repaired on resume from the records.
        self._write_trial_file(record, trial_dir, in_progress=False)  # before the line: a lost line is rebuilt
        ledger.append_trial(self.run_dir, record)
        self.history = recorded
        self.state["noise_floor"] = self.history.noise_floor()
        self._save_state()
        self.workspace.reset_to(self.best.commit)
        # Weights: the baseline's and the best trial's are kept (holdout scores and `autoresearch eval`).
        if record.status == KEEP and previous.trial is not None and previous.trial != self.history.baseline_trial():
            (self.run_dir / trial_dir_name(previous.trial) / WEIGHTS_FILE).unlink(missing_ok=True)
        elif record.status != KEEP:
            (trial_dir / WEIGHTS_FILE).unlink(missing_ok=True)
        self._plan_repair()
        self.emit(TRIAL_FINISHED, record.trial, record.status, record=record.to_dict(), totals=self.totals())
        return record

    def _write_trial_file(self, record: TrialRecord, trial_dir: Path, *, in_progress: bool) -> None:
        ledger.write_trial_file(trial_dir, record, in_progress=in_progress, settings=self.config.summary())

    def _plan_repair(self) -> None:
        """The repair the next proposal makes (history.py decides), told the tail of the crash's log."""
        plan = self.history.repair_plan()
        self.repair = None if plan is None else Repair(
            plan.crashed_trial, plan.crashed_commit, plan.attempt,
            runner.log_tail(self.run_dir / trial_dir_name(plan.last_trial) / plan.crash_log))

    # -- closing

    def score_holdout(self) -> dict | None:
        """At the end of a run: the baseline and the best on the holdout split (holdout.py)."""
        baseline = self.baseline_record()
        if baseline is None or baseline.val_bpb is None:
            return None
        self.emit(EVALUATING, None, "scoring the baseline and the best on the holdout split")
        try:
            with self.stop.interruptible():
                summary = score_run(self.run_dir, self.evaluator(), force=False, locked=True)
        except UserError as error:  # the records stand; the holdout can be scored later with `autoresearch eval`
            self.emit(NOTE, message=f"holdout not scored: {error}")
            return None
        if summary is not None:
            self.state["holdout"] = summary
            if summary.get("flag"):
                self.emit(NOTE, message=f"holdout: {summary['flag']}")
        return summary

    def close(self, status: str, reason: str) -> None:
        self.state.update(status=status, stop_reason=reason, pid=None)
        self._save_state()
        self.emit(RUN_STOPPED, message=reason, status=status, stop_reason=reason, totals=self.totals())

    def hard_exit(self) -> None:
        """The second Ctrl-C (on the watchdog thread): kill training, mark the run interrupted; resume reconciles.

        The view is not closed (its lock may be held by the interrupted main thread): the
        terminal's cursor is shown again directly.
        """
        with contextlib.suppress(Exception):
            runner.kill_now(self.active_training_group)  # type: ignore[arg-type]
        with contextlib.suppress(Exception):
            runner.kill_child_groups(grace=0.0)
        with contextlib.suppress(Exception):
            state = dict(self.state)
            state.update(status=ledger.RUN_INTERRUPTED, stop_reason="interrupted twice: stopped at once",
                         updated_at=utc_now(), pid=None)
            ledger.write_run_state(self.run_dir, state)
        with contextlib.suppress(Exception):
            self.release_lock()
        with contextlib.suppress(OSError):
            if os.isatty(1):
                os.write(1, b"\x1b[?25h\n")


def run_night(config: RunConfig, *, proposer: Proposer | None = None, view: View | None = None,
              evaluator: Evaluator | None = None, handle_signals: bool = True) -> RunOutcome:
    """Run (or resume) the run `config.tag` until a limit, a stop request or a fatal error ends it.

    `proposer` defaults to `create_proposer(config.agent, ...)`, `evaluator` to
    `autoresearch.evaluate.run_evaluator`, `view` to one that shows nothing. With
    `handle_signals`, SIGINT/SIGTERM/SIGHUP stop the run cleanly (a second one at once).
    """
    view = view or NullView()
    stop = StopControl()
    night = Night(config, proposer, view, evaluator, stop)
    try:
        night.open()
    except BaseException:
        night.release_lock()
        raise
    stop.on_hard_exit = night.hard_exit
    if handle_signals:
        stop.install()
    status, reason = ledger.RUN_FINISHED, "stopped"
    holdout: dict | None = None
    try:
        try:
            reason = night.loop()
        except KeyboardInterrupt:
            stop.request("interrupted")
            reason = stop.reason or "interrupted"
        except UserError as error:
            if not stop.requested:
                status, reason = ledger.RUN_INTERRUPTED, f"error: {error}"
                night.close(status, reason)
                raise
            # Ctrl-C reaches git's children too (they share our process group): the failed git
            # command is the interrupt's doing, not an error of the run.
            reason = stop.reason or "interrupted"
        except Exception as error:  # a disk that filled up, or a bug: run.json must not say "running"
            status, reason = ledger.RUN_INTERRUPTED, f"error: {type(error).__name__}: {error}"
            with contextlib.suppress(Exception):
                night.close(status, reason)
            if isinstance(error, OSError):
                raise UserError(f"{error}; the records up to the last finished trial are intact, "
                                "fix the cause and resume with --resume") from error
            raise
        if stop.requested:
            status = ledger.RUN_INTERRUPTED
        elif config.holdout and not night.failed:
            try:
                holdout = night.score_holdout()
            except KeyboardInterrupt:
                stop.request("interrupted while scoring the holdout split")
                status, reason = ledger.RUN_INTERRUPTED, f"{reason}; interrupted while scoring the holdout split"
        night.close(status, reason)
    finally:
        stop.uninstall()
        night.release_lock()
    return RunOutcome(tag=config.tag, run_dir=night.run_dir, status=status, stop_reason=reason, best=night.best,
                      baseline_val_bpb=night.baseline_val_bpb(), trials_this_session=night.session_trials,
                      exit_code=EXIT_INTERRUPTED if status == ledger.RUN_INTERRUPTED else int(night.failed),
                      holdout=holdout)
