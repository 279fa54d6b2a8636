"""The loop end to end, in-process: a real temporary project and dataset, real training and evaluation.

The agent is scripted (tests/run_fixtures.py); everything else is real: git, the training
subprocess under launch.py, the evaluator subprocess. Trials meant to fail put their code at the
top of train.py, before torch is imported, so only the trials that really train cost seconds.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from run_fixtures import (
    ScriptedProposer,
    check_records_and_git,
    do_nothing,
    git,
    insert_code,
    make_project,
    night_config,
    sealed_copy,
    set_knob,
    tiny_train_source,
    write_file,
)

from autoresearch.agent.base import ProposalContext
from autoresearch.errors import UserError
from autoresearch.loop import run_night
from autoresearch.runner import pid_alive
from autoresearch.sandbox import isolation_mode
from autoresearch.view import TRIAL_FINISHED, NullView


@pytest.fixture(scope="session")
def run_dataset(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sealed_copy(tiny_dataset, tmp_path_factory.mktemp("run-data") / "tiny")


def gone(pid: int) -> bool:
    return not pid_alive(pid)


CRASH_LINE = 'raise RuntimeError("tensor shapes do not match (planted)")'


@pytest.mark.slow
def test_a_night_of_every_kind_of_trial(tmp_path: Path, run_dataset: Path) -> None:
    project = make_project(tmp_path)
    user_head = git(project, "rev-parse", "HEAD")

    def crash_with_better_lr(context: ProposalContext) -> str:
        set_knob("MATRIX_LR", 0.03)(context)
        insert_code(CRASH_LINE, "", at_top=True)(context)
        return "MATRIX_LR 0.005 -> 0.03"

    def repair(context: ProposalContext) -> str:
        path = context.worktree / "train.py"
        path.write_text(path.read_text().replace(CRASH_LINE + "\n", ""))
        return "MATRIX_LR 0.005 -> 0.03 (repaired)"

    def worse_and_the_human_edits_program_md(context: ProposalContext) -> str:
        (project / "program.md").write_text("# program\n\nNow try smaller learning rates.\n")
        return set_knob("MATRIX_LR", 0.0001)(context)

    tamper = 'open("prepare.py", "a").write("# changed by train.py\\n"); raise SystemExit(0)'
    peek = 'open(_os.path.join(_os.environ["AUTORESEARCH_DATA_DIR"], "val.bin"), "rb").read(8)'
    agent = ScriptedProposer([
        crash_with_better_lr,                                              # 1 crash
        repair,                                                            # 2 keep (repair 1)
        worse_and_the_human_edits_program_md,                              # 3 discard
        write_file("prepare.py", "SEQ = 1\n", "edit prepare.py"),          # 4 rejected (retried once)
        write_file("helper.py", "X = 1\n", "add a helper"),
        do_nothing(), do_nothing(),                                        # 5 rejected: did not apply
        set_knob("MATRIX_LR", 0.0001), set_knob("MATRIX_LR", 0.0001),      # 6 rejected: repeats trial 3
        insert_code(peek, "peek at val.bin", at_top=True),                 # 7 rejected: integrity
        insert_code(tamper, "edit prepare.py from train.py", at_top=True),  # 8 rejected: integrity, restored
        insert_code("raise SystemExit(3)", "crash A", at_top=True),        # 9 crash
        insert_code("raise SystemExit(4)", "crash B", at_top=True),        # 10 crash (repair 1)
        insert_code("raise SystemExit(5)", "crash C", at_top=True),        # 11 crash (repair 2)
        insert_code("raise SystemExit(6)", "fresh idea", at_top=True),     # 12 crash, a fresh proposal
    ])
    view = NullView()
    outcome = run_night(night_config(project, run_dataset, max_trials=13), proposer=agent, view=view,
                        handle_signals=False)

    assert outcome.status == "finished" and outcome.exit_code == 0
    assert outcome.stop_reason == "reached --max-trials 13"
    records = check_records_and_git(project, "t")
    statuses = [record.status for record in records]
    assert statuses == ["keep", "crash", "keep", "discard", "rejected", "rejected", "rejected", "rejected",
                        "rejected", "crash", "crash", "crash", "crash"]
    by_trial = {record.trial: record for record in records}
    contexts = {context.trial_number: context for context in agent.contexts}

    # the baseline, the crash and its repair
    assert by_trial[0].val_bpb is not None and by_trial[0].decision.startswith("baseline")
    assert by_trial[1].failure_reason == "RuntimeError: tensor shapes do not match (planted)"
    assert contexts[2].repair_attempt == 1 and "planted" in contexts[2].last_crash_tail
    assert by_trial[2].repair_attempt == 1 and by_trial[2].parent == by_trial[0].commit
    assert by_trial[2].val_bpb < by_trial[0].val_bpb and by_trial[2].delta < 0
    assert by_trial[3].val_bpb > by_trial[2].val_bpb and by_trial[3].best_val_bpb == by_trial[2].val_bpb
    assert outcome.best.trial == 2 and outcome.best.val_bpb == by_trial[2].val_bpb
    assert outcome.baseline_val_bpb == by_trial[0].val_bpb

    # invalid proposals: never committed, the agent heard why
    assert by_trial[4].commit == "" and by_trial[4].failure_reason == "changed helper.py: only train.py may be edited"
    retry_notes = [c for c in agent.contexts if c.trial_number == 4][1].rejection_notes
    assert any("prepare.py" in note for note in retry_notes)
    assert by_trial[5].failure_reason.startswith("train.py is unchanged")
    assert by_trial[6].failure_reason == "train.py is identical to trial 3's; propose something new"

    # integrity: reading val.bin, and changing prepare.py (restored in the worktree)
    assert by_trial[7].commit and by_trial[7].failure_reason.startswith("integrity: training opened validation data")
    assert any("val.bin" in note for note in contexts[8].rejection_notes)
    if isolation_mode().startswith("landlock"):  # the OS refused the write: nothing changed
        assert by_trial[8].failure_reason.startswith(
            f"integrity: the sandbox ({isolation_mode()}) denied the trial access to prepare.py")
    else:  # the write happened, was seen and undone
        assert by_trial[8].failure_reason == "integrity: train.py modified prepare.py"
    worktree = project / "runs" / "t" / "worktree"
    assert (worktree / "prepare.py").read_text() == (project / "prepare.py").read_text()
    assert any("prepare.py" in note for note in contexts[9].rejection_notes)

    # repairs are bounded: two attempts, then a fresh proposal
    assert [by_trial[n].repair_attempt for n in (9, 10, 11, 12)] == [0, 1, 2, 0]
    assert contexts[12].repair_attempt == 0

    # program.md is read afresh for every trial
    assert by_trial[3].program_md_sha256 != by_trial[4].program_md_sha256
    assert "smaller learning rates" in contexts[4].program_md

    # the records on disk
    run_dir = project / "runs" / "t"
    for number in (0, 2, 3):
        trial_dir = run_dir / f"trial-{number:04d}"
        for name in ("train.py", "diff.patch", "train.log", "eval.json", "eval.log"):
            assert (trial_dir / name).is_file(), f"{trial_dir / name} is missing"
        assert json.loads((trial_dir / "eval.json").read_text())["bpb"] == by_trial[number].val_bpb
    assert "+MATRIX_LR = 0.03" in (run_dir / "trial-0002" / "diff.patch").read_text()
    assert json.loads((run_dir / "trial-0003" / "transcript.json").read_text())["messages"]
    assert sorted(path.parent.name for path in run_dir.glob("trial-*/model.pt")) == ["trial-0000", "trial-0002"]
    state = json.loads((run_dir / "run.json").read_text())
    assert state["status"] == "finished" and state["stop_reason"] == "reached --max-trials 13"
    assert state["best"] == {"trial": 2, "commit": by_trial[2].commit, "val_bpb": by_trial[2].val_bpb}
    assert state["baseline_commit"] == user_head and state["branch"] == "autoresearch/t"
    assert state["config"]["budget"] == 20 and state["noise_floor"] is None
    assert not (run_dir / "lock").exists()
    assert agent.steps == []
    assert sum(r.cost_usd for r in records) == pytest.approx(0.01 * 15)  # every propose call is paid for

    # the user's checkout is untouched
    assert git(project, "rev-parse", "HEAD") == user_head
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(project, "status", "--porcelain", "--", "train.py", "prepare.py") == ""

    finished = [event for event in view.events if event.kind == TRIAL_FINISHED]
    assert len(finished) == 13 and finished[-1].data["totals"]["counts"]["crash"] == 5

    # the other limits, on resume: cost (summed over the run) and hours (from this start)
    outcome = run_night(night_config(project, run_dataset, max_cost=0.15), proposer=agent, handle_signals=False)
    assert outcome.stop_reason == "reached --max-cost $0.15" and outcome.trials_this_session == 0
    outcome = run_night(night_config(project, run_dataset, hours=1e-9), proposer=agent, handle_signals=False)
    assert outcome.stop_reason == "reached --hours 1e-09" and outcome.trials_this_session == 0
    assert len(check_records_and_git(project, "t")) == 13


def test_a_baseline_that_overruns_is_killed_with_its_grandchild(tmp_path: Path, run_dataset: Path) -> None:
    stall = ('import subprocess as _sp; _g = _sp.Popen(["sleep", "120"]); '
             'open(_os.path.join(_os.path.dirname(_os.environ["AUTORESEARCH_WEIGHTS_PATH"]), "grandchild.pid"), '
             '"w").write(str(_g.pid)); _time.sleep(120)')
    source = tiny_train_source().replace('    raise SystemExit("crashing on purpose (TEST_CRASH_AT_START)")\n',
                                         '    raise SystemExit("crashing on purpose (TEST_CRASH_AT_START)")\n'
                                         + stall + "\n")
    project = make_project(tmp_path, train_source=source)
    pid_file = project / "runs" / "t" / "trial-0000" / "grandchild.pid"  # in the trial's own directory
    started = time.monotonic()
    outcome = run_night(night_config(project, run_dataset, budget=0.5, startup_allowance=1.0),
                        proposer=ScriptedProposer([]), handle_signals=False)
    assert time.monotonic() - started < 20
    records = check_records_and_git(project, "t")
    assert [record.status for record in records] == ["timeout"]
    assert "ran past 2 s" in records[0].failure_reason
    assert outcome.stop_reason.startswith("the unmodified train.py (the baseline) did not score: timeout")
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(grandchild)


def test_refuses_to_start_over_a_dirty_train_py(tmp_path: Path, run_dataset: Path) -> None:
    project = make_project(tmp_path)
    (project / "train.py").write_text((project / "train.py").read_text() + "\n# unsaved idea\n")
    with pytest.raises(UserError, match=r"^train.py has uncommitted changes"):
        run_night(night_config(project, run_dataset), proposer=ScriptedProposer([]), handle_signals=False)
    assert not (project / "runs" / "t" / "run.json").exists()
    assert "autoresearch/t" not in git(project, "branch", "--list")


def test_a_live_lock_refuses_a_second_run_and_a_stale_one_is_taken(tmp_path: Path, run_dataset: Path) -> None:
    project = make_project(tmp_path, train_source=tiny_train_source().replace(
        "if _os.environ.get(\"TEST_CRASH_AT_START\"):", "if True:"))
    config = night_config(project, run_dataset)
    outcome = run_night(config, proposer=ScriptedProposer([]), handle_signals=False)  # the baseline crashes
    assert "did not score: crash" in outcome.stop_reason
    lock = project / "runs" / "t" / "lock"
    holder = os.spawnlp(os.P_NOWAIT, "sleep", "sleep", "30")
    try:
        lock.write_text(f"{holder}\n")
        with pytest.raises(UserError, match=f"another autoresearch run \\(pid {holder}\\)"):
            run_night(config, proposer=ScriptedProposer([]), handle_signals=False)
    finally:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
    outcome = run_night(config, proposer=ScriptedProposer([]), handle_signals=False)  # stale lock: taken
    records = check_records_and_git(project, "t")
    assert [record.trial for record in records] == [0, 1]
    assert not lock.exists()


def test_resume_reconciles_an_unrecorded_trial_and_a_stray_worktree(tmp_path: Path, run_dataset: Path) -> None:
    """What SIGKILL between commit and record leaves behind: a trial ref with no record, a moved branch."""
    project = make_project(tmp_path, train_source=tiny_train_source().replace(
        "if _os.environ.get(\"TEST_CRASH_AT_START\"):", "if _os.environ.get(\"CRASH_BASELINE\"):"))
    os.environ["CRASH_BASELINE"] = "1"
    try:
        config = night_config(project, run_dataset)
        run_night(config, proposer=ScriptedProposer([]), handle_signals=False)
        worktree = project / "runs" / "t" / "worktree"
        (worktree / "train.py").write_text((worktree / "train.py").read_text() + "# half-done trial\n")
        git(worktree, "-c", "user.name=autoresearch", "-c", "user.email=autoresearch@localhost",
            "commit", "-q", "-am", "a trial the harness never recorded")
        stray = git(worktree, "rev-parse", "HEAD")
        git(project, "update-ref", "refs/autoresearch/t/trial-0001", stray)
        (project / "runs" / "t" / "trial-0002").mkdir()  # killed while proposing
        (worktree / "scratch.txt").write_text("left behind\n")
        for name in ("trials.jsonl", "results.tsv"):  # a write torn by a full disk
            with open(project / "runs" / "t" / name, "a") as handle:
                handle.write('{"trial": 1, "sta')
        outcome = run_night(config, proposer=ScriptedProposer([]), handle_signals=False)
    finally:
        del os.environ["CRASH_BASELINE"]
    records = check_records_and_git(project, "t", torn_lines=(2,))
    assert [(r.trial, r.status) for r in records] == [(0, "crash"), (1, "interrupted"), (2, "interrupted"),
                                                      (3, "crash")]
    assert records[1].commit == stray and records[1].description == "a trial the harness never recorded"
    assert records[2].commit == ""
    assert outcome.trials_this_session == 1


def test_proposals_the_agent_never_delivered_do_not_count_toward_max_trials(tmp_path: Path,
                                                                           run_dataset: Path) -> None:
    """An agent error is recorded (rejected, with the reason) but tried nothing: --max-trials counts real trials."""
    def agent_bug(context: ProposalContext) -> str:
        raise RuntimeError("the agent fell over (planted)")

    project = make_project(tmp_path)
    agent = ScriptedProposer([agent_bug, set_knob("MATRIX_LR", 0.03)], cost_known=False)
    outcome = run_night(night_config(project, run_dataset, max_trials=2), proposer=agent, handle_signals=False)
    records = check_records_and_git(project, "t")
    assert [(r.status, r.extra.get("agent_error")) for r in records] == [("keep", None), ("rejected", True),
                                                                        ("keep", None)]
    assert records[1].failure_reason == "agent error: RuntimeError: the agent fell over (planted)"
    assert outcome.stop_reason == "reached --max-trials 2"
    assert records[2].extra.get("cost_unknown") is True  # an unpriced model's cost is unknown, not free
