"""The overnight loop: `run_night(config)` runs trials until a limit or a stop request ends the run.

A trial, in the order `Night.run_trial` takes the steps:

  1. read `program.md` afresh from the user's checkout (the human steers by editing it) and hash it;
  2. propose: the agent edits `train.py` in the run's worktree (trial 0, the baseline, is not edited;
     a repair starts from the crashed train.py and is told its log tail);
  3. validate: train.py parses, differs from its parent, repeats no earlier trial's source, and no
     other file changed; an invalid proposal goes back to the agent with the reason (bounded
     retries), then is recorded `rejected` and never committed;
  4. commit on the run's branch, with a ref `refs/autoresearch/<tag>/trial-NNNN` that outlives resets;
  5. train in a guarded subprocess under the harness's clock (runner.py, launch.py);
  6. score the saved weights with the harness's evaluator (evaluate.py);
  7. decide keep or not (`decide`), after checking nothing guarded changed (integrity.py);
  8. record the trial (ledger.py), then move the worktree back to the best commit.

Only the best trial's weights are kept (`trial-NNNN/model.pt`); the training in progress has its
process group written to `runs/<tag>/training.pgid` so a later session can kill it if we die.
Every state change is recorded before the worktree is reset, and the records are the source of
truth: a run killed at any point (Ctrl-C twice, SIGKILL, a power cut) resumes by recording
unrecorded trial refs as `interrupted` and resetting the worktree to the best kept commit.

What this does not protect against: a proposer that ignores the interrupt for a long time in C
code, the clock being changed during a run (limits use the monotonic clock, records use UTC wall
time), two machines running the same tag on a shared disk (the lock is a pid file), and a single
trial overshooting --max-cost (cost is checked between trials).
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

from autoresearch import contract, ledger, runner
from autoresearch.agent.base import HistoryRow, Proposal, ProposalContext, Proposer, Usage
from autoresearch.errors import UserError
from autoresearch.gitops import Project, Workspace, branch_name
from autoresearch.integrity import Guard, describe, sha256_text
from autoresearch.knobs import set_knobs
from autoresearch.ledger import CRASH, DISCARD, INTERRUPTED, KEEP, REJECTED, TIMEOUT, TrialRecord
from autoresearch.runconfig import RunConfig
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
LOCK_FILE = "lock"
TRAINING_GROUP_FILE = "training.pgid"  # the process group of the training in progress
WEIGHTS_FILE = "model.pt"
MAX_AGENT_FAILURES = 5  # consecutive proposer exceptions before the run stops
Evaluator = Callable[..., object]


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def trial_dir_name(trial: int) -> str:
    return f"trial-{trial:04d}"


# --- The decision ------------------------------------------------------------------------------


def decide(val_bpb: float, best_val_bpb: float | None, *, min_delta: float = 0.0) -> tuple[str, str]:
    """Keep or discard a scored trial: (status, the reason in words). Lower val_bpb is better."""
    if best_val_bpb is None:
        return KEEP, f"first score of the run: {val_bpb:.6f}"
    threshold = best_val_bpb - min_delta
    if val_bpb < threshold:
        return KEEP, (f"{val_bpb:.6f} < best {best_val_bpb:.6f}" +
                      (f" - min_delta {min_delta:g}" if min_delta else ""))
    return DISCARD, (f"{val_bpb:.6f} is not below best {best_val_bpb:.6f}" +
                     (f" - min_delta {min_delta:g}" if min_delta else ""))


# --- Stopping ----------------------------------------------------------------------------------


class StopControl:
    """Ctrl-C and SIGTERM: the first asks the run to stop cleanly, the second leaves at once.

    While the loop waits on something it can abandon (the agent, the evaluator, a back-off), the
    first signal raises KeyboardInterrupt right there; during training the runner polls
    `requested` and kills the process group; during git and record writes it is only noted and
    acted on at the next step, so those are never torn. The second signal kills the training
    group, marks run.json interrupted and calls os._exit: the records stay consistent because
    resuming reconciles them (as after SIGKILL).
    """

    def __init__(self) -> None:
        self.requested = False
        self.reason: str | None = None
        self.signals = 0
        self._interruptible = False
        self.on_hard_exit: Callable[[], None] | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        self.signals += 1
        if self.signals >= 2:
            if self.on_hard_exit is not None:
                self.on_hard_exit()
            os._exit(EXIT_INTERRUPTED)
        self.request(f"interrupted by {signal.Signals(signum).name}")
        if self._interruptible:
            self._interruptible = False
            raise KeyboardInterrupt

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
class Best:
    trial: int | None
    commit: str
    val_bpb: float | None

    def as_dict(self) -> dict:
        return {"trial": self.trial, "commit": self.commit, "val_bpb": self.val_bpb}


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
        self.records: list[TrialRecord] = []
        self.seen_sources: dict[str, int] = {}  # sha256 of train.py -> first trial with it
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
        self.best: Best
        self.guard: Guard

    # -- set-up

    def open(self) -> None:
        config = self.config
        state = ledger.read_run_state(self.run_dir)
        if state is None and config.resume:
            raise UserError(f"there is no run to resume at {self.run_dir} (start one without --resume)")
        fresh = state is None
        if fresh:
            if self.project.branch_exists(config.tag):
                raise UserError(f"branch {branch_name(config.tag)} already exists but "
                                f"{self.run_dir / ledger.RUN_FILE} does not; choose another --tag or delete the branch")
            self.project.check_committed()
        self._check_dataset()
        self.proposer()  # a missing API key is said now, not after the baseline's minutes
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

    def _apply_baseline_knobs(self) -> str:
        """Rewrite the baseline's knobs (the demo shrinks the model for a CPU) as the run's first commit."""
        path = self.workspace.path / "train.py"
        source = set_knobs(path.read_text(encoding="utf-8"), self.config.baseline_knobs)
        ledger.write_text_atomic(path, source)
        changes = ", ".join(f"{name} = {value!r}" for name, value in self.config.baseline_knobs.items())
        return self.workspace.commit_train_py(f"baseline knobs for this run: {changes}", None)

    def _check_dataset(self) -> None:
        data_dir = Path(self.config.data_dir or contract.dataset_dir())
        if not (data_dir / "manifest.json").is_file():
            raise UserError(f"no prepared dataset at {data_dir}; run `autoresearch prepare` "
                            "(or pass --dataset / set AUTORESEARCH_DATA_DIR)")
        try:
            from autoresearch.data.manifest import verify_dataset
        except ImportError:  # the data package is optional for this check
            return
        verify_dataset(data_dir, check_hashes=False)

    def _acquire_lock(self) -> None:
        lock = self.run_dir / LOCK_FILE
        for _ in range(3):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = int(lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    holder = 0
                if holder and holder != os.getpid() and _pid_alive(holder):
                    raise UserError(f"another autoresearch run (pid {holder}) is using {self.run_dir}; "
                                    f"stop it first, or delete {lock} if that process is not autoresearch") from None
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{os.getpid()}\n")
            return
        raise UserError(f"could not take the lock {lock}; delete it if no run is active")

    def release_lock(self) -> None:
        lock = self.run_dir / LOCK_FILE
        try:
            if int(lock.read_text().strip() or 0) == os.getpid():
                lock.unlink()
        except (OSError, ValueError):
            pass

    def _reconcile(self) -> None:
        """Make records, refs and the worktree agree after any kind of stop, then load the state."""
        stale_group = self.run_dir / TRAINING_GROUP_FILE
        if stale_group.exists():  # a harness killed during training: its training may still run
            with contextlib.suppress(OSError, ValueError):
                if runner.kill_stale_group(int(stale_group.read_text().strip())):
                    self.emit(NOTE, message="killed the training left running by the previous session")
            stale_group.unlink(missing_ok=True)
        ledger.close_torn_lines(self.run_dir)
        log = ledger.read_trials(self.run_dir)
        if log.torn_lines:
            self.emit(NOTE, message=f"{ledger.TRIALS_FILE}: skipped unreadable line(s) {log.torn_lines}")
        self.records = sorted(log.records, key=lambda record: record.trial)
        recorded = {record.trial for record in self.records}
        refs = self.workspace.trial_refs()
        dirs = {int(path.name[6:]) for path in self.run_dir.glob("trial-*") if path.name[6:].isdigit()}
        for number in sorted((set(refs) | dirs) - recorded):
            commit = refs.get(number, "")
            parent, description, source_sha = commit, "(proposal interrupted)", ""
            if commit:
                first_parent, _, subject = self.workspace.commit_info(commit)
                parent = first_parent if number > 0 and first_parent else commit
                description = subject or "(unrecorded)"
                source_sha = sha256_text(self.workspace.show(commit, "train.py"))
            now = utc_now()
            record = TrialRecord(trial=number, status=INTERRUPTED, description=description, parent=parent,
                                 commit=commit, started_at=now, ended_at=now, seed=self.config.seed,
                                 failure_reason="the harness stopped before this trial was recorded "
                                                "(recorded when the run resumed)",
                                 train_py_sha256=source_sha)
            ledger.append_trial(self.run_dir, record)
            self.records.append(record)
        self.records.sort(key=lambda record: record.trial)
        self.best = self._best_from_records()
        for record in self.records:
            if record.train_py_sha256:
                self.seen_sources.setdefault(record.train_py_sha256, record.trial)
        last = self.records[-1] if self.records else None
        repairable = last is not None and last.status == CRASH and last.commit
        if repairable and last.repair_attempt < self.config.max_repairs and self.best.val_bpb is not None:
            tail = runner.log_tail(self.run_dir / trial_dir_name(last.trial) / "train.log")
            self.repair = Repair(last.trial, last.commit, last.repair_attempt + 1, tail)
        self.workspace.remove_stale_locks()
        if self.workspace.head() != self.best.commit or self.workspace.changed_files():
            self.workspace.reset_to(self.best.commit)

    def _best_from_records(self) -> Best:
        kept = [record for record in self.records if record.status == KEEP and record.commit]
        if kept:
            last = kept[-1]
            return Best(last.trial, last.commit, last.val_bpb)
        return Best(None, self.state["baseline_commit"], None)

    # -- bookkeeping

    def next_trial(self) -> int:
        return max((record.trial for record in self.records), default=-1) + 1

    def baseline_val_bpb(self) -> float | None:
        kept = [record for record in self.records if record.status == KEEP]
        return kept[0].val_bpb if kept else None

    def totals(self) -> dict:
        counts = {status: 0 for status in ledger.STATUSES}
        tokens: dict[str, int] = {}
        for record in self.records:
            counts[record.status] = counts.get(record.status, 0) + 1
            for name, value in record.tokens.items():
                tokens[name] = tokens.get(name, 0) + int(value)
        return {"best_val_bpb": self.best.val_bpb, "baseline_val_bpb": self.baseline_val_bpb(),
                "best_trial": self.best.trial, "counts": counts, "tokens": tokens,
                "cost_usd": sum(record.cost_usd for record in self.records), "trials": len(self.records)}

    def emit(self, kind: str, trial: int | None = None, message: str = "", **data: object) -> None:
        self.view.emit(Event(kind, trial, message, dict(data)))

    def _save_state(self) -> None:
        self.state.update(updated_at=utc_now(), best=self.best.as_dict())
        ledger.write_run_state(self.run_dir, self.state)

    def limit_reached(self) -> str | None:
        config = self.config
        if self.stop.requested:
            return self.stop.reason or "interrupted"
        if config.max_trials is not None and len(self.records) >= config.max_trials:
            return f"reached --max-trials {config.max_trials}"
        if config.max_cost is not None and sum(record.cost_usd for record in self.records) >= config.max_cost:
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
        if self._proposer is None:
            from autoresearch.agent.factory import create_proposer

            self._proposer = create_proposer(self.config.agent, model=self.config.model, seed=self.config.seed,
                                             notes_path=self.run_dir / "notes.md")
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
        baseline = self.best.val_bpb is None
        repair = None if baseline else self.repair
        record = TrialRecord(trial=number, status=INTERRUPTED,
                             description="baseline" if baseline else "(proposing)", parent=self.best.commit, commit="", started_at=utc_now(), ended_at="",
                             seed=self.config.seed, repair_attempt=repair.attempt if repair else 0)
        if baseline:
            record.extra["baseline"] = True
        label = record.description if baseline else (f"repair {repair.attempt} of trial {repair.crashed_trial}"
                                                      if repair else "proposing")
        self.emit(TRIAL_STARTED, number, label, repair_attempt=record.repair_attempt)
        fatal: UserError | None = None
        try:
            fatal = self._steps(record, baseline, repair, trial_dir)
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

    def _steps(self, record: TrialRecord, baseline: bool, repair: Repair | None,
               trial_dir: Path) -> UserError | None:
        """Steps 1-7 of a trial; fills in `record`. Returns a UserError that must end the run, if any."""
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
        # 5-6. train, then score
        before = self.guard.snapshot()
        training = self._train(record, trial_dir)
        changes = self.guard.changes(before)  # the evaluator's row cache included: training must not touch it
        evaluation = None
        if training.status == runner.OK and not changes:
            evaluation = self._evaluate(record, trial_dir)
            # train.py's module code runs again inside the evaluator: check once more
            after_evaluation = self.guard.changes(before, eval_cache=False)
            changes += [change for change in after_evaluation if change not in changes]
        # 7. decide
        self._judge(record, training, evaluation, changes)
        return None

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
                except KeyboardInterrupt:
                    raise
                except UserError as error:
                    raise AgentFailure(str(error), fatal=error) from error
                except Exception as error:  # an agent bug or outage must not end the night at once
                    self.agent_failures += 1
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
            record.agent_seconds = agent_seconds
            ledger.write_json_atomic(trial_dir / "transcript.json",
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
        ledger.write_text_atomic(trial_dir / "diff.patch", diff)
        source = (self.workspace.path / "train.py").read_text(encoding="utf-8")
        ledger.write_text_atomic(trial_dir / "train.py", source)

    def _training_env(self, trial_dir: Path) -> dict[str, str]:
        config = self.config
        env = {name: value for name, value in os.environ.items() if not name.startswith("ANTHROPIC_")}
        data_dir = Path(config.data_dir or contract.dataset_dir())
        protected = [str(data_dir / f"{split}{suffix}")
                     for split in ("val", "holdout") for suffix in (".bin", ".docs.npy")]
        env.update({
            contract.ENV_TIME_BUDGET: f"{config.budget:g}",
            contract.ENV_SEED: str(config.seed),
            contract.ENV_DATA_DIR: str(data_dir),
            contract.ENV_MAX_SEQ_LEN: str(config.seq_len),
            contract.ENV_DEVICE: config.device,
            contract.ENV_WEIGHTS_PATH: str(trial_dir / WEIGHTS_FILE),
            contract.ENV_TRAIN_ONLY: "1",
            contract.ENV_EVAL_TOKENS: str(config.eval_tokens or contract.DEFAULT_EVAL_TOKENS),
            "AUTORESEARCH_PROTECTED_PATHS": os.pathsep.join(protected),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        })
        env.pop(contract.ENV_DATASET, None)  # the data dir is explicit
        return env

    def _train(self, record: TrialRecord, trial_dir: Path) -> runner.TrainingResult:
        self.emit(TRAINING, record.trial, f"{record.description} ({record.commit[:7]})", commit=record.commit)
        (trial_dir / WEIGHTS_FILE).unlink(missing_ok=True)

        def on_progress(progress: runner.Progress) -> None:
            self.emit(PROGRESS, record.trial, **dataclasses.asdict(progress))

        def on_start(pgid: int) -> None:
            self.active_training_group = pgid
            ledger.write_text_atomic(self.run_dir / TRAINING_GROUP_FILE, f"{pgid}\n")

        result = runner.run_training(
            self.workspace.path / "train.py", env=self._training_env(trial_dir), log_path=trial_dir / "train.log",
            wall_limit=self.config.wall_limit, on_progress=on_progress, on_start=on_start,
            should_stop=lambda: self.stop.requested, kill_grace=self.config.kill_grace)
        self.active_training_group = None
        (self.run_dir / TRAINING_GROUP_FILE).unlink(missing_ok=True)
        record.training_seconds = round(result.seconds, 3)
        record.claimed_val_bpb = runner.float_or_none(result.summary.get("val_bpb"))
        record.claimed_training_seconds = runner.float_or_none(result.summary.get("training_seconds"))
        vram_mb = runner.float_or_none(result.summary.get("peak_vram_mb"))
        record.peak_memory_gb = round(vram_mb / 1024, 3) if vram_mb is not None else None  # claimed by train.py
        if result.summary:
            record.extra["claimed"] = result.summary
        if result.last_progress is not None:
            record.extra["last_step"] = result.last_progress.step
        if self.config.device in ("auto", "cuda") and not runner.wait_for_gpu_release(result.pids):
            self.emit(NOTE, record.trial, "the GPU still lists this trial's processes after 30 s; going on")
        if result.status == runner.INTERRUPTED:
            raise KeyboardInterrupt
        return result

    def _evaluate(self, record: TrialRecord, trial_dir: Path) -> object:
        self.emit(EVALUATING, record.trial, "scoring val_bpb")
        clock = time.monotonic()
        with self.stop.interruptible():
            result = self.evaluator()(
                self.workspace.path / "train.py", trial_dir / WEIGHTS_FILE, Path(self.config.data_dir or ""),
                split="val", tokens=self.config.eval_tokens, seq_len=self.config.seq_len,
                device=self.config.device, timeout=self.config.eval_timeout, log_path=trial_dir / "eval.log",
                env={"PYTHONDONTWRITEBYTECODE": "1"})
        record.evaluation_seconds = round(time.monotonic() - clock, 3)
        payload = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(vars(result))
        ledger.write_json_atomic(trial_dir / "eval.json", payload)
        return result

    def _judge(self, record: TrialRecord, training: runner.TrainingResult, evaluation: object | None,
               changes: list) -> None:
        """Steps 6-7: from what happened to a status and a reason in words."""
        guarded = {change.name for change in changes}
        # Any other tracked file of the worktree changed counts too (new untracked files are just cleaned).
        tracked = [name for name in self.workspace.changed_files()
                   if name not in guarded and self._is_tracked(name)]
        if changes or tracked:
            names = [change.name for change in changes] + tracked
            record.status, record.failure_reason = REJECTED, "integrity: train.py modified " + ", ".join(names)
            self.rejection_notes.append(f"Trial {record.trial} was rejected: {record.failure_reason}. "
                                        "Worktree files were restored; train.py must not change other files.")
            unrestorable = [change for change in changes if not change.restorable]
            if unrestorable:
                record.extra["stops_run"] = (f"{describe(unrestorable)}: the harness or the dataset can no longer "
                                             "be trusted; reinstall autoresearch or re-run `autoresearch prepare`, "
                                             "then resume")
            return
        if training.status == runner.INTEGRITY:
            record.status, record.failure_reason = REJECTED, training.reason
            self.rejection_notes.append(f"Trial {record.trial} was rejected: {training.reason}. "
                                        "train.py may read only the train split.")
            return
        if training.status == runner.TIMEOUT:
            record.status, record.failure_reason = TIMEOUT, training.reason
            return
        if training.status == runner.CRASH:
            record.status, record.failure_reason = CRASH, training.reason
            return
        assert evaluation is not None
        if not getattr(evaluation, "ok", False):
            kind = getattr(evaluation, "failure_kind", None)
            why = getattr(evaluation, "reason", None) or "the evaluator failed"
            if kind in ("causality", "tamper"):
                record.status, record.failure_reason = REJECTED, f"{kind}: {why}"
                self.rejection_notes.append(f"Trial {record.trial} was rejected by the evaluator: {kind}: {why}")
            elif kind == "timeout":
                record.status, record.failure_reason = TIMEOUT, f"evaluation timed out: {why}"
            else:
                record.status, record.failure_reason = CRASH, f"evaluation failed ({kind}): {why}"
                record.extra["crash_log"] = "eval.log"
            record.extra["eval_failure_kind"] = kind
            return
        val_bpb = float(evaluation.bpb)  # type: ignore[attr-defined]
        record.val_bpb = val_bpb
        if self.best.val_bpb is not None:
            record.delta = val_bpb - self.best.val_bpb
        if record.trial == 0 or self.best.val_bpb is None:
            record.status, record.decision = KEEP, f"baseline: {val_bpb:.6f}"
        else:
            record.status, record.decision = decide(val_bpb, self.best.val_bpb, min_delta=self.config.min_delta)

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
        if record.extra.get("baseline") and record.status not in (KEEP, INTERRUPTED):
            record.extra["stops_run"] = (f"the unmodified train.py (the baseline) did not score: {record.status}: "
                                         f"{record.failure_reason}; fix it or its environment, then resume")
        previous = self.best
        if record.status == KEEP:
            self.best = Best(record.trial, record.commit, record.val_bpb)
        record.best_val_bpb = self.best.val_bpb
        # Record first: a stop between here and the reset is repaired on resume from the records.
        ledger.append_trial(self.run_dir, record)
        self.records.append(record)
        if record.train_py_sha256:
            self.seen_sources.setdefault(record.train_py_sha256, record.trial)
        self._save_state()
        self.workspace.reset_to(self.best.commit)
        # Weights: only the best trial's are kept (a later holdout score needs them).
        if record.status == KEEP and previous.trial is not None:
            (self.run_dir / trial_dir_name(previous.trial) / WEIGHTS_FILE).unlink(missing_ok=True)
        elif record.status != KEEP:
            (trial_dir / WEIGHTS_FILE).unlink(missing_ok=True)
        self._plan_repair(record, trial_dir)
        self.emit(TRIAL_FINISHED, record.trial, record.status, record=record.to_dict(), totals=self.totals())
        return record

    def _plan_repair(self, record: TrialRecord, trial_dir: Path) -> None:
        if record.status == CRASH and record.commit and self.best.val_bpb is not None \
                and record.repair_attempt < self.config.max_repairs:
            log = trial_dir / record.extra.get("crash_log", "train.log")
            crashed = self.repair.crashed_trial if (self.repair and record.repair_attempt) else record.trial
            self.repair = Repair(crashed, record.commit, record.repair_attempt + 1, runner.log_tail(log))
        elif record.status != INTERRUPTED:
            self.repair = None

    # -- closing

    def close(self, status: str, reason: str) -> None:
        self.state.update(status=status, stop_reason=reason, pid=None)
        self._save_state()
        self.emit(RUN_STOPPED, message=reason, status=status, stop_reason=reason, totals=self.totals())

    def hard_exit(self) -> None:
        """The second Ctrl-C: kill training now and mark the run interrupted; resume reconciles."""
        group = self.active_training_group
        if group is not None:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(Exception):
            runner.kill_child_groups(grace=0.0)
        with contextlib.suppress(Exception):
            state = dict(self.state)
            state.update(status=ledger.RUN_INTERRUPTED, stop_reason="interrupted twice: stopped at once",
                         updated_at=utc_now(), pid=None)
            ledger.write_run_state(self.run_dir, state)
        with contextlib.suppress(Exception):
            self.release_lock()
        with contextlib.suppress(Exception):
            self.view.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/stat")
    if status.exists():
        with contextlib.suppress(OSError):
            text = status.read_text()
            return text[text.rfind(")") + 2 :].split()[0] != "Z"
    return True


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
    try:
        try:
            reason = night.loop()
        except KeyboardInterrupt:
            stop.request("interrupted")
            reason = stop.reason or "interrupted"
        except UserError as error:
            status, reason = ledger.RUN_INTERRUPTED, f"error: {error}"
            night.close(status, reason)
            raise
        if stop.requested:
            status = ledger.RUN_INTERRUPTED
        night.close(status, reason)
    finally:
        stop.uninstall()
        night.release_lock()
    return RunOutcome(tag=config.tag, run_dir=night.run_dir, status=status, stop_reason=reason, best=night.best,
                      baseline_val_bpb=night.baseline_val_bpb(), trials_this_session=night.session_trials,
                      exit_code=EXIT_INTERRUPTED if status == ledger.RUN_INTERRUPTED else int(night.failed))
