"""Signals a night must survive: an SSH drop (SIGHUP), a second Ctrl-C while the view holds its lock.

Each runs a real `run_night` in a child Python process (the test's own process must keep its
signal handlers), on a real temporary project and dataset, and reads the records afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from run_fixtures import check_records_and_git, make_project, sealed_copy

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def run_dataset(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sealed_copy(tiny_dataset, tmp_path_factory.mktemp("signals-data") / "tiny")


NIGHT = '''
import os, sys, threading, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from run_fixtures import ScriptedProposer, night_config, set_knob
from autoresearch.loop import run_night
from autoresearch.view import PlainView, TRAINING

class LockingView(PlainView):
    """Holds a plain (non-reentrant) lock while it writes, as rich's console does from its threads."""
    def __init__(self):
        super().__init__(sys.stdout)
        self.lock = threading.Lock()
    def emit(self, event):
        with self.lock:
            super().emit(event)
            sys.stdout.flush()
            if event.kind == TRAINING and os.environ.get("TEST_SLOW_VIEW"):
                print("view: holding its lock", flush=True)
                time.sleep(float(os.environ["TEST_SLOW_VIEW"]))
    def close(self):
        with self.lock:
            print("view: closed", flush=True)

project, data = Path(sys.argv[1]), Path(sys.argv[2])
view = LockingView()
outcome = run_night(night_config(project, data, max_trials=int(sys.argv[3])),
                    proposer=ScriptedProposer([set_knob("MATRIX_LR", 0.03)]), view=view)
view.close()
print("outcome:", outcome.status, outcome.stop_reason, flush=True)
sys.exit(outcome.exit_code)
'''


def start_night(tmp_path: Path, project: Path, data: Path, max_trials: int, **env: str) -> subprocess.Popen:
    script = tmp_path / "night.py"
    script.write_text(textwrap.dedent(NIGHT.format(tests=str(TESTS))))
    return subprocess.Popen([sys.executable, str(script), str(project), str(data), str(max_trials)],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 90) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode()  # type: ignore[union-attr]
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"never printed {text!r}: {''.join(lines)}")


def run_state(project: Path) -> dict:
    return json.loads((project / "runs" / "t" / "run.json").read_text())


@pytest.mark.slow
def test_an_ssh_drop_does_not_end_the_night(tmp_path: Path, run_dataset: Path) -> None:
    """SIGHUP, then the terminal is gone (writes fail): the run goes on and finishes."""
    project = make_project(tmp_path)
    process = start_night(tmp_path, project, run_dataset, 2, TEST_SLEEP_AT_START="2")
    wait_for_line(process, "training")  # the baseline trains
    process.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    process.stdout.close()  # type: ignore[union-attr]  # the terminal went away with the connection
    assert process.wait(timeout=120) == 0
    records = check_records_and_git(project, "t")
    assert [record.status for record in records] == ["keep", "keep"]
    assert run_state(project)["status"] == "finished"


@pytest.mark.slow
def test_a_second_ctrl_c_leaves_at_once_even_while_the_view_holds_its_lock(tmp_path: Path, run_dataset: Path) -> None:
    project = make_project(tmp_path)
    process = start_night(tmp_path, project, run_dataset, 2, TEST_SLOW_VIEW="60")
    wait_for_line(process, "view: holding its lock")
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 130 and time.monotonic() - started < 15
    state = run_state(project)
    assert state["status"] == "interrupted" and state["stop_reason"] == "interrupted twice: stopped at once"
    assert not (project / "runs" / "t" / "lock").exists()
