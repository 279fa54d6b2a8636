"""SIGKILL at every phase of a night, one after another, each followed by a resume.

One real run (CPU-sized, with a noise floor, confirmation runs and the holdout) is killed in the
baseline's training, in the baseline's evaluation, right after a trial is recorded, in the
noise-floor run, in a proposal's training, in a confirmation run and while the holdout is
scored. Every kill is followed by a new process that resumes the run, and the last one finishes
it. At the end the records and git agree, every killed trial is `interrupted` and no process of
the run is left. The agent is scripted: trial N sets MATRIX_LR to a value of its own, so a
re-proposal after a kill is always a new source.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from run_fixtures import check_records_and_git, make_project, sealed_copy

from autoresearch import ledger

TESTS = Path(__file__).resolve().parent

DRIVER = '''
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from run_fixtures import night_config, set_knob
from autoresearch.agent.base import Proposal, Usage
from autoresearch.loop import run_night

RATES = [0.03, 0.02, 0.04, 0.0001, 0.05, 0.01, 0.06, 0.002, 0.07, 0.008, 0.09, 0.003]

class PerTrialProposer:
    name = "per-trial"
    def propose(self, context):
        description = set_knob("MATRIX_LR", RATES[context.trial_number % len(RATES)])(context)
        return Proposal(description, Usage(input_tokens=1), [])

project, data = Path(sys.argv[1]), Path(sys.argv[2])
config = night_config(project, data, max_trials=7, noise_runs=1, confirm_runs=1, holdout=True)
outcome = run_night(config, proposer=PerTrialProposer())
sys.exit(outcome.exit_code)
'''


@pytest.fixture(scope="session")
def run_dataset(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sealed_copy(tiny_dataset, tmp_path_factory.mktemp("kills-data") / "tiny")


def newest_trial(run_dir: Path) -> Path | None:
    trials = sorted(run_dir.glob("trial-*"))
    return trials[-1] if trials else None


def trained(path: Path) -> bool:
    return path.is_file() and "step 00001" in path.read_text(errors="replace")


def processes_of(project: Path) -> list[str]:
    """Command lines of live processes that name the project (training, evaluators, the harness)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(project) in cmdline and state != "Z":
            found.append(cmdline)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to look for orphaned processes")
def test_sigkill_at_every_phase_then_resume(tmp_path: Path, run_dataset: Path) -> None:
    project = make_project(tmp_path)
    run_dir = project / "runs" / "t"
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DRIVER.format(tests=str(TESTS))))
    env = {**os.environ, "TEST_SLEEP_AT_START": "1.5"}  # every training waits a moment: a window to kill in

    before: set[str] = set()  # the trial directories that existed when this process started

    def newest_fresh_trial() -> Path | None:
        fresh = [trial for trial in sorted(run_dir.glob("trial-*")) if trial.name not in before]
        return fresh[-1] if fresh else None

    def kind(trial: Path) -> str:
        """What the trial is, from its own (in-progress) record.json."""
        trial_file = ledger.read_trial_file(trial)
        extra = trial_file.record.extra if trial_file is not None else {}
        return "baseline" if extra.get("baseline") else "noise" if extra.get("noise_floor") else "proposal"

    def in_training(of: str) -> Callable[[], bool]:
        def reached() -> bool:
            trial = newest_fresh_trial()
            return trial is not None and trained(trial / "train.log") and not (trial / "eval.log").exists() \
                and kind(trial) == of
        return reached

    def in_evaluation() -> bool:
        trial = newest_fresh_trial()
        return trial is not None and (trial / "eval.log").exists() and not (trial / "eval.json").exists()

    def in_confirmation() -> bool:
        trial = newest_fresh_trial()
        return trial is not None and trained(trial / "confirm-1" / "train.log") \
            and not (trial / "confirm-1" / "eval.log").exists()

    def in_holdout() -> bool:
        return any(run_dir.glob("trial-*/holdout.log")) and not (run_dir / "trial-0000" / "holdout.json").exists()

    def just_recorded() -> bool:
        recorded = {f"trial-{record.trial:04d}" for record in ledger.read_trials(run_dir).records}
        return bool(recorded - before)

    phases = [("the baseline's training", in_training("baseline")), ("the baseline's evaluation", in_evaluation),
              ("just after a record", just_recorded), ("the noise-floor run", in_training("noise")),
              ("a proposal's training", in_training("proposal")), ("a confirmation run", in_confirmation),
              ("scoring the holdout", in_holdout)]
    for name, reached in phases:
        before = {trial.name for trial in run_dir.glob("trial-*")}
        process = subprocess.Popen([sys.executable, str(driver), str(project), str(run_dataset)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not reached():
            assert process.poll() is None, f"the run ended (exit {process.returncode}) before {name}"
            assert time.monotonic() < deadline, f"never reached {name}"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        deadline = time.monotonic() + 15
        while processes_of(project) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_of(project) == [], f"left running after a SIGKILL in {name}"

    final = subprocess.run([sys.executable, str(driver), str(project), str(run_dataset)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    records = check_records_and_git(project, "t")
    interrupted = [r for r in records if r.status == ledger.INTERRUPTED]
    # A kill just after a record may also catch the next trial as it starts: at least one per mid-trial kill.
    assert sum(1 for r in interrupted if r.extra.get("baseline")) == 2  # its training, its evaluation
    assert any(r.extra.get("noise_floor") and r.seed == 43 for r in interrupted)
    assert sum(1 for r in interrupted if not r.extra.get("noise_floor") and not r.extra.get("baseline")) >= 2
    assert any(r.extra.get("noise_floor") and r.status == ledger.DISCARD and r.seed == 43 for r in records)
    kept_dirs = {f"trial-{r.trial:04d}" for r in records if r.status == ledger.KEEP}
    assert {path.parent.name for path in run_dir.glob("trial-*/**/model.pt")} <= kept_dirs
    import json

    state = json.loads((run_dir / ledger.RUN_FILE).read_text())
    assert state["status"] == "finished" and state.get("holdout")
    assert processes_of(project) == []
