"""Resume rebuilds the records from everything that survives, and never moves the branch back.

Each test first runs a real (CPU-sized) night, then damages what a bad night damages — a torn
or deleted trials.jsonl, a lost run.json, a SIGKILL in the middle of a trial — and resumes. The
tiny train.py stops after MAX_STEPS steps, so its scores are deterministic: MATRIX_LR 0.03 beats
the baseline's 0.005 every time and is kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_fixtures import (
    ScriptedProposer,
    check_records_and_git,
    git,
    insert_code,
    make_project,
    night_config,
    sealed_copy,
    set_knob,
    tiny_train_source,
)

from autoresearch import ledger
from autoresearch.agent.base import ProposalContext
from autoresearch.errors import UserError
from autoresearch.loop import run_night
from autoresearch.runconfig import load_config


@pytest.fixture(scope="session")
def run_dataset(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sealed_copy(tiny_dataset, tmp_path_factory.mktemp("resume-data") / "tiny")


def night_with_a_keep(project: Path, data: Path) -> list[ledger.TrialRecord]:
    """Baseline (keep), MATRIX_LR 0.03 (keep), MATRIX_LR 0.0001 (discard)."""
    agent = ScriptedProposer([set_knob("MATRIX_LR", 0.03), set_knob("MATRIX_LR", 0.0001)])
    run_night(night_config(project, data, max_trials=3), proposer=agent, handle_signals=False)
    records = check_records_and_git(project, "t")
    assert [record.status for record in records] == ["keep", "keep", "discard"]
    return records


def train_source_with(code: str) -> str:
    """tiny train.py with `code` right after the test hooks (before torch is imported)."""
    last_hook = '    raise SystemExit("crashing on purpose (TEST_CRASH_AT_START)")\n'
    assert last_hook in tiny_train_source()
    return tiny_train_source().replace(last_hook, last_hook + code, 1)


def as_recorded(records: list[ledger.TrialRecord]) -> list[tuple]:
    return [(r.trial, r.status, r.commit, r.val_bpb, r.description, r.decision) for r in records]


def branch(project: Path) -> str:
    return git(project, "rev-parse", "autoresearch/t")


def resume(project: Path, data: Path, **flags: object):
    return run_night(night_config(project, data, max_trials=3, **flags), proposer=ScriptedProposer([]),
                     handle_signals=False)


@pytest.mark.slow
def test_lost_trial_lines_are_rebuilt_from_the_trials_own_records(tmp_path: Path, run_dataset: Path) -> None:
    project = make_project(tmp_path)
    original = night_with_a_keep(project, run_dataset)
    run_dir = project / "runs" / "t"
    jsonl = run_dir / ledger.TRIALS_FILE

    # 1. the last line torn in half (a full disk): that trial keeps its score and status
    text = jsonl.read_text()
    jsonl.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])
    outcome = resume(project, run_dataset)
    assert outcome.trials_this_session == 0
    records = check_records_and_git(project, "t", torn_lines=(3,))
    assert as_recorded(records) == as_recorded(original)
    assert "0.000000\tinterrupted" not in (run_dir / ledger.RESULTS_FILE).read_text()

    # 2. trials.jsonl deleted: every trial comes back, and the branch stays at the kept best
    best = branch(project)
    jsonl.unlink()
    resume(project, run_dataset)
    records = check_records_and_git(project, "t")
    assert as_recorded(records) == as_recorded(original)
    assert branch(project) == best == original[1].commit
    state = json.loads((run_dir / ledger.RUN_FILE).read_text())
    assert state["best"] == {"trial": 1, "commit": original[1].commit, "val_bpb": original[1].val_bpb}

    # 3. trials.jsonl and the best trial's record.json both gone: run.json's best is still a keep
    jsonl.unlink()
    (run_dir / "trial-0001" / ledger.TRIAL_RECORD_FILE).unlink()
    resume(project, run_dataset)
    records = check_records_and_git(project, "t")
    assert [(r.trial, r.status) for r in records] == [(0, "keep"), (1, "keep"), (2, "discard")]
    assert records[1].val_bpb == original[1].val_bpb and branch(project) == best
    assert "run.json names this trial as the best" in records[1].decision


@pytest.mark.slow
def test_a_lost_run_json_has_one_recovery_path(tmp_path: Path, run_dataset: Path) -> None:
    project = make_project(tmp_path)
    run_night(night_config(project, run_dataset, max_trials=1, budget=20), proposer=ScriptedProposer([]),
              handle_signals=False)
    run_dir = project / "runs" / "t"
    (run_dir / ledger.RUN_FILE).unlink()

    with pytest.raises(UserError, match=r"run.json is missing but run t left trials.jsonl, 1 trial directory, "
                                        r"the branch autoresearch/t, 1 trial ref; `autoresearch run --resume "
                                        r"--tag t` rebuilds run.json"):
        run_night(night_config(project, run_dataset, max_trials=2), proposer=ScriptedProposer([]),
                  handle_signals=False)
    assert not (run_dir / ledger.RUN_FILE).exists()
    # the measurement settings survive in the trials' own records: a resume without flags keeps them
    config = load_config({"tag": "t", "resume": True}, project_dir=project, environ={})
    assert (config.budget, config.seq_len, config.eval_tokens, config.device) == (20, 64, 4096, "cpu")

    agent = ScriptedProposer([set_knob("MATRIX_LR", 0.03)])
    outcome = run_night(night_config(project, run_dataset, max_trials=2, resume=True), proposer=agent,
                        handle_signals=False)
    records = check_records_and_git(project, "t")
    assert [(r.trial, r.status) for r in records] == [(0, "keep"), (1, "keep")]
    assert outcome.trials_this_session == 1
    state = json.loads((run_dir / ledger.RUN_FILE).read_text())
    assert state["baseline_commit"] == records[0].commit and state["status"] == "finished"


HANG_ON_SEED = '''if _os.environ.get("TEST_HANG_ON_SEED", "-") == _os.environ.get("AUTORESEARCH_SEED"):
    print("step 00001 (1.0%) | loss: 9.000000 | remaining: 99s", flush=True)
    _time.sleep(120)
'''


@pytest.mark.slow
def test_a_noise_floor_run_killed_by_sigkill_is_recorded_as_what_it_was(tmp_path: Path, run_dataset: Path) -> None:
    """SIGKILL during the noise-floor run with seed 43: resume records seed 43, not the run's seed."""
    source = train_source_with(HANG_ON_SEED)
    project = make_project(tmp_path, train_source=source)
    env = {**os.environ, "TEST_HANG_ON_SEED": "43", "AUTORESEARCH_DATA_DIR": str(run_dataset)}
    command = [sys.executable, "-m", "autoresearch", "run", "--budget", "20", "--device", "cpu", "--seq-len", "64",
               "--eval-tokens", "4096", "--tag", "t", "--noise-runs", "1", "--confirm-runs", "0",
               "--no-holdout", "--max-trials", "2", "--agent", "offline"]
    process = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = project / "runs" / "t" / "trial-0001" / "train.log"
    deadline = time.monotonic() + 90
    while not (log.exists() and "step 00001" in log.read_text()):
        assert time.monotonic() < deadline and process.poll() is None, "the noise-floor run never started"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    trial_dir = project / "runs" / "t" / "trial-0001"
    (trial_dir / "model.pt").write_bytes(b"weights of a run killed while it was being scored")
    (trial_dir / "confirm-1").mkdir()
    (trial_dir / "confirm-1" / "model.pt").write_bytes(b"more weights")

    outcome = run_night(night_config(project, run_dataset, max_trials=2, noise_runs=1),
                        proposer=ScriptedProposer([set_knob("MATRIX_LR", 0.03)]), handle_signals=False)
    records = check_records_and_git(project, "t")
    assert [(r.trial, r.status, r.seed) for r in records] == [(0, "keep", 42), (1, "interrupted", 43),
                                                              (2, "discard", 43), (3, "keep", 42)]
    assert records[1].description == "noise floor: baseline, seed 43 (interrupted)"
    assert records[1].extra.get("noise_floor") and not records[1].extra.get("baseline")
    assert records[2].extra.get("noise_floor") and outcome.stop_reason == "reached --max-trials 2"
    assert not list(trial_dir.glob("**/model.pt")), "an interrupted trial's weights were left behind"
    state = json.loads((project / "runs" / "t" / ledger.RUN_FILE).read_text())
    assert state["noise_floor"] is not None and state["noise_floor"]["seeds"] == [42, 43]


# A full disk during the first noise-floor attempt (trial 1) only, or during every one when asked.
CRASH_ON_SEED_43 = '''if _os.environ.get("AUTORESEARCH_SEED") == "43" and (_os.environ.get("TEST_FAIL_ALWAYS")
        or _os.path.basename(_os.path.dirname(_os.environ.get("AUTORESEARCH_WEIGHTS_PATH", ""))) == "trial-0001"):
    raise OSError(28, "No space left on device (planted)")
'''


@pytest.mark.slow
def test_a_failed_noise_floor_run_is_run_again_and_a_second_failure_stops_the_run(
        tmp_path: Path, run_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = train_source_with(CRASH_ON_SEED_43)
    project = make_project(tmp_path, train_source=source)

    # the disk is full once: the seed runs again and the noise floor is measured
    outcome = run_night(night_config(project, run_dataset, max_trials=2, noise_runs=1),
                        proposer=ScriptedProposer([set_knob("MATRIX_LR", 0.03)]), handle_signals=False)
    records = check_records_and_git(project, "t")
    assert [(r.status, r.seed) for r in records] == [("keep", 42), ("crash", 43), ("discard", 43), ("keep", 42)]
    assert outcome.exit_code == 0
    state = json.loads((project / "runs" / "t" / ledger.RUN_FILE).read_text())
    assert state["noise_floor"]["seeds"] == [42, 43]

    # it stays full: two failures of the seed stop the run instead of deciding without a noise floor
    monkeypatch.setenv("TEST_FAIL_ALWAYS", "1")
    outcome = run_night(night_config(project, run_dataset, tag="u", max_trials=3, noise_runs=1),
                        proposer=ScriptedProposer([]), handle_signals=False)
    records = check_records_and_git(project, "u")
    assert [(r.status, r.seed) for r in records] == [("keep", 42), ("crash", 43), ("crash", 43)]
    assert outcome.exit_code == 1
    assert outcome.stop_reason.startswith("the noise-floor run with seed 43 failed 2 times (crash: OSError")

    # fixed, resumed: the noise floor comes first, and the crashed noise run is nobody's repair
    monkeypatch.delenv("TEST_FAIL_ALWAYS")
    agent = ScriptedProposer([set_knob("MATRIX_LR", 0.03)])
    run_night(night_config(project, run_dataset, tag="u", max_trials=2, noise_runs=1), proposer=agent,
              handle_signals=False)
    records = check_records_and_git(project, "u")
    assert [(r.status, r.seed) for r in records][3] == ("discard", 43)
    assert records[3].extra.get("noise_floor") and records[4].repair_attempt == 0
    assert agent.contexts[0].repair_attempt == 0 and agent.contexts[0].last_crash_tail is None


HANG_IF_ASKED = 'if _os.environ.get("TEST_HANG_ONCE"): print("step 00001 (1.0%) | loss: 9.0 | remaining: 9s", flush=True); _time.sleep(120)'


@pytest.mark.slow
def test_an_interrupted_proposal_may_be_proposed_again(tmp_path: Path, run_dataset: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Its train.py never scored, so the same change is not refused as "identical to trial 1"."""
    project = make_project(tmp_path)

    def change(context: ProposalContext) -> str:
        set_knob("MATRIX_LR", 0.03)(context)
        insert_code(HANG_IF_ASKED, "", at_top=True)(context)
        return "MATRIX_LR 0.005 -> 0.03"

    monkeypatch.setenv("TEST_HANG_ONCE", "1")
    log = project / "runs" / "t" / "trial-0001" / "train.log"

    def interrupt_once_training() -> None:
        deadline = time.monotonic() + 90
        while not (log.exists() and "step 00001" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    import threading

    threading.Thread(target=interrupt_once_training, daemon=True).start()
    outcome = run_night(night_config(project, run_dataset, max_trials=2), proposer=ScriptedProposer([change]),
                        handle_signals=True)
    assert outcome.status == "interrupted"
    assert [r.status for r in check_records_and_git(project, "t")] == ["keep", "interrupted"]

    monkeypatch.delenv("TEST_HANG_ONCE")
    agent = ScriptedProposer([change])
    run_night(night_config(project, run_dataset, max_trials=3), proposer=agent, handle_signals=False)
    records = check_records_and_git(project, "t")
    assert [(r.trial, r.status) for r in records] == [(0, "keep"), (1, "interrupted"), (2, "keep")]
    assert records[2].train_py_sha256 == records[1].train_py_sha256
