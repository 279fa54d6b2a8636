"""The runner, supervise.py and launch.py with real subprocesses: timing, progress, crashes, time-outs,
process groups, processes that leave them, identities and bounded waits.

The scripts here are tiny Python files (no torch), so each test costs well under a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autoresearch import launch, runner

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process checks read /proc")


def gone(pid: int) -> bool:
    return not runner.pid_alive(pid)


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(body))
    return path


def train(path: Path, wall_limit: float = 20.0, **kwargs) -> runner.TrainingResult:
    env = {**os.environ, **kwargs.pop("env", {})}
    return runner.run_training(path, env=env, log_path=path.parent / "train.log", wall_limit=wall_limit,
                               kill_grace=kwargs.pop("kill_grace", 1.0), poll_interval=0.02, **kwargs)


def test_progress_lines_and_summary_are_parsed_live(tmp_path: Path) -> None:
    path = script(tmp_path, """
        import sys
        print("starting up", flush=True)
        for step in range(1, 4):
            print(f"step {step:05d} ({step * 25:.1f}%) | loss: {5 - step:.6f} | dt: 3ms | remaining: {9 - step}s",
                  flush=True)
        sys.stdout.write("step 00004 (99.0%) | loss: 1.000000 | remaining: 0s\\r")
        print("\\n---\\nval_bpb: 1.234\\ntraining_seconds: 300.1\\npeak_vram_mb: 2048.0")
        print("cwd is", __import__("os").getcwd(), "name is", __name__)
    """)
    seen: list[runner.Progress] = []
    result = train(path, on_progress=seen.append)
    assert result.status == runner.OK and result.returncode == 0
    assert [p.step for p in seen] == [1, 2, 3, 4]
    assert seen[0].loss == 4.0 and seen[0].remaining == 8.0 and seen[0].percent == 25.0
    assert result.summary == {"val_bpb": "1.234", "training_seconds": "300.1", "peak_vram_mb": "2048.0"}
    log = (tmp_path / "train.log").read_text()
    assert f"cwd is {tmp_path} name is __main__" in log  # run as a script, from its own directory
    assert 0 < result.seconds < 20


def test_a_crash_reports_the_exception_line(tmp_path: Path) -> None:
    path = script(tmp_path, """
        def build():
            raise ValueError("shapes do not match: 3 vs 4")
        build()
    """)
    result = train(path)
    assert result.status == runner.CRASH
    assert result.returncode == 1
    assert result.reason == "ValueError: shapes do not match: 3 vs 4"
    assert "Traceback" in runner.log_tail(tmp_path / "train.log")


def test_timeout_kills_the_whole_group_grandchildren_included(tmp_path: Path) -> None:
    path = script(tmp_path, """
        import pathlib, signal, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            "g = subprocess.Popen(['sleep', '120']); open('grandchild.pid', 'w').write(str(g.pid)); time.sleep(120)"])
        pathlib.Path("child.pid").write_text(str(child.pid))
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # SIGTERM is ignored: SIGKILL must follow
        print("step 00001 (1.0%) | loss: 3.000000 | remaining: 1s", flush=True)
        time.sleep(120)
    """)
    started = time.monotonic()
    groups: list[runner.ProcessIdentity] = []
    result = train(path, wall_limit=1.5, kill_grace=0.5, on_start=groups.append)
    assert result.status == runner.TIMEOUT
    assert "ran past 2 s" in result.reason
    assert time.monotonic() - started < 10
    assert (tmp_path / "grandchild.pid").exists(), "the grandchild started before the time-out"
    assert not runner.group_alive(groups[0].pgid)
    child = int((tmp_path / "child.pid").read_text())
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    assert wait_for(lambda: gone(child) and gone(grandchild), timeout=5)
    assert {child, grandchild} <= result.pids
    assert result.last_progress is not None and result.last_progress.step == 1


def test_processes_left_behind_by_a_finished_training_are_killed(tmp_path: Path) -> None:
    path = script(tmp_path, """
        import subprocess
        daemon = subprocess.Popen(["sleep", "120"])
        open("daemon.pid", "w").write(str(daemon.pid))
        print("done")
    """)
    result = train(path)
    assert result.status == runner.OK
    daemon = int((tmp_path / "daemon.pid").read_text())
    assert wait_for(lambda: gone(daemon), timeout=5)


def test_opening_validation_data_aborts_training(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "val.bin").write_bytes(b"\0" * 16)
    (data / "train.bin").write_bytes(b"\0" * 16)
    path = script(tmp_path, f"""
        import numpy as np
        np.fromfile({str(data / "train.bin")!r}, dtype=np.uint8)   # the train split is fine
        try:
            np.memmap({str(data / "val.bin")!r}, dtype=np.uint8, mode="r")
        except BaseException:
            print("swallowed")  # the guard leaves with os._exit: nothing to swallow
        print("still running")
    """)
    result = train(path, env={launch.ENV_PROTECTED_PATHS: str(data / "val.bin")})
    assert result.status == runner.INTEGRITY
    assert result.returncode == launch.INTEGRITY_EXIT_CODE
    assert result.reason == f"integrity: training opened validation data {data / 'val.bin'}"
    assert "still running" not in (tmp_path / "train.log").read_text()


def test_a_stop_request_kills_training(tmp_path: Path) -> None:
    path = script(tmp_path, """
        import time
        print("step 00001 (1.0%) | loss: 3.000000 | remaining: 100s", flush=True)
        time.sleep(60)
    """)
    progress: list[runner.Progress] = []
    result = train(path, on_progress=progress.append, should_stop=lambda: bool(progress))
    assert result.status == runner.INTERRUPTED
    assert result.seconds < 10


def test_output_beyond_the_log_cap_is_a_crash(tmp_path: Path) -> None:
    path = script(tmp_path, """
        import sys
        while True:
            sys.stdout.write("x" * 4096 + "\\n")
    """)
    result = train(path, log_limit_bytes=1 << 20)
    assert result.status == runner.CRASH
    assert "more than 1 MB" in result.reason


def test_training_dies_with_a_killed_harness(tmp_path: Path) -> None:
    path = script(tmp_path, """
        import os, time
        open("training.pid", "w").write(str(os.getpid()))
        time.sleep(60)
    """)
    harness = subprocess.Popen([sys.executable, "-c", (
        "import os, sys; from pathlib import Path; from autoresearch import runner; "
        f"runner.run_training(Path({str(path)!r}), env=dict(os.environ), log_path=Path({str(tmp_path / 'log')!r}), "
        "wall_limit=60)")])
    assert wait_for(lambda: (tmp_path / "training.pid").exists() and (tmp_path / "training.pid").read_text())
    training = int((tmp_path / "training.pid").read_text())
    harness.send_signal(signal.SIGKILL)
    harness.wait()
    assert wait_for(lambda: gone(training), timeout=5)


def test_crash_reason_without_a_traceback() -> None:
    assert runner.crash_reason("", -9) == "train.py was killed by SIGKILL"
    assert runner.crash_reason("out of data\n", 3) == "train.py exited with status 3: out of data"
    tail = "Traceback (most recent call last):\n  File \"train.py\", line 3\ntorch.OutOfMemoryError: CUDA out of memory"
    assert runner.crash_reason(tail, 1) == "torch.OutOfMemoryError: CUDA out of memory"


def test_log_tail_reads_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert runner.log_tail(log, lines=3) == "line 99997\nline 99998\nline 99999"
    assert runner.log_tail(tmp_path / "missing.log") == ""


def test_pid_alive_tells_running_from_exited_and_zombie_processes() -> None:
    assert runner.pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    assert wait_for(lambda: gone(child.pid))  # exited but not yet reaped: a zombie
    assert not runner.pid_alive(child.pid)
    child.wait()  # reaped: the pid no longer exists
    assert not runner.pid_alive(child.pid)


def test_a_process_that_asked_to_die_with_the_harness_dies_when_it_is_killed(tmp_path: Path) -> None:
    """The evaluator and launch.py call die_with_harness(): a SIGKILLed harness leaves no orphan."""
    import signal
    import subprocess
    import sys
    import time

    from autoresearch.runner import pid_alive

    harness = (
        "import os, subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'from autoresearch.launch import die_with_harness; "
        "die_with_harness(); import time; time.sleep(60)'],\n"
        "    env={**os.environ, 'AUTORESEARCH_HARNESS_PID': str(os.getpid())}, start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", harness], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    time.sleep(1.0)  # let the child make its request
    assert pid_alive(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while pid_alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(child_pid)


# --- Processes that leave the group, identities, bounded waits (issue 12, issue 9 items 1 and 10) ---

DAEMON = """
    import os, subprocess, sys, time
    # a daemon in a session of its own, double-forked so that its parent is gone (the classic escape)
    pid = os.fork()
    if pid == 0:
        os.setsid()
        daemon = subprocess.Popen(["sleep", "300"], start_new_session=True)
        open("daemon.pid", "w").write(str(daemon.pid))
        os._exit(0)
    os.waitpid(pid, 0)
    while not os.path.exists("daemon.pid") or not open("daemon.pid").read():
        time.sleep(0.01)
    print("step 00001 (1.0%) | loss: 3.000000 | remaining: 1s", flush=True)
    time.sleep(float(os.environ.get("TEST_LINGER", "0")))
"""


def test_a_new_session_daemon_is_killed_when_training_ends(tmp_path: Path) -> None:
    """Issue 12's third escape: a process in a new session outlived the trial and the run."""
    result = train(script(tmp_path, DAEMON))
    assert result.status == runner.OK, result.reason
    daemon = int((tmp_path / "daemon.pid").read_text())
    try:
        assert gone(daemon), "the new-session daemon outlived its training"
        assert daemon in result.pids  # seen as the trial's, for the GPU wait
    finally:
        with contextlib.suppress(OSError):
            os.kill(daemon, signal.SIGKILL)


def test_a_new_session_daemon_is_killed_when_training_times_out(tmp_path: Path) -> None:
    result = train(script(tmp_path, DAEMON), wall_limit=1.0, kill_grace=0.3, env={"TEST_LINGER": "60"})
    assert result.status == runner.TIMEOUT
    daemon = int((tmp_path / "daemon.pid").read_text())
    try:
        assert gone(daemon)
    finally:
        with contextlib.suppress(OSError):
            os.kill(daemon, signal.SIGKILL)


def test_resume_kills_only_a_process_that_still_matches_its_identity(tmp_path: Path) -> None:
    """Issue 9 item 1: the recorded group id alone killed whatever process group had it now."""
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)  # `setsid sleep 900 &`
    record = tmp_path / "training.pgid"
    try:
        record.write_text(f"{stranger.pid}\n")  # what the old version wrote: a bare number
        note = runner.kill_recorded_training(record)
        assert runner.pid_alive(stranger.pid), "an unrelated process group was killed"
        assert note is not None and "killed nothing" in note and not record.exists()
        # an identity with the stranger's pid but another start time (a recycled pid) kills nothing either
        forged = runner.ProcessIdentity(stranger.pid, stranger.pid, (runner.start_time(stranger.pid) or 0) + 1,
                                        runner.ProcessIdentity.of(stranger.pid, "x").boot_id, "x")
        record.write_text(forged.to_json())
        assert runner.kill_recorded_training(record) is None
        assert runner.pid_alive(stranger.pid)
        # the right start time but not started with our marker: still not ours
        record.write_text(runner.ProcessIdentity.of(stranger.pid, "not-its-marker").to_json())
        assert runner.kill_recorded_training(record) is None
        assert runner.pid_alive(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()


def test_resume_kills_the_training_a_killed_harness_left_running(tmp_path: Path) -> None:
    path = script(tmp_path, """
        import os, subprocess, time
        child = subprocess.Popen(["sleep", "300"], start_new_session=True)  # would survive the harness
        open("child.pid", "w").write(str(child.pid))
        time.sleep(300)
    """)
    record = tmp_path / "training.pgid"
    harness = subprocess.Popen([sys.executable, "-c", (
        "import os; from pathlib import Path; from autoresearch import runner; "
        f"runner.run_training(Path({str(path)!r}), env=dict(os.environ), log_path=Path({str(tmp_path / 'log')!r}), "
        f"wall_limit=300, on_start=lambda identity: Path({str(record)!r}).write_text(identity.to_json()))")])
    assert wait_for(lambda: (tmp_path / "child.pid").exists() and (tmp_path / "child.pid").read_text())
    child = int((tmp_path / "child.pid").read_text())
    identity = runner.ProcessIdentity.from_json(record.read_text())
    assert identity.matches()
    os.kill(identity.pid, signal.SIGSTOP)  # a supervisor that cannot sweep (say, stopped): resume must do it
    harness.send_signal(signal.SIGKILL)
    harness.wait()
    try:
        assert runner.pid_alive(child)  # left behind
        note = runner.kill_recorded_training(record)
        assert note is not None and note.startswith("killed ") and str(child) in note
        assert wait_for(lambda: gone(child) and gone(identity.pid), timeout=10)
    finally:
        for pid in (child, identity.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_every_wait_is_bounded(tmp_path: Path) -> None:
    """Issue 9 item 10: process.wait() had no timeout; a process that does not exit must not hang us."""
    stuck = subprocess.Popen(["sleep", "300"])
    os.kill(stuck.pid, signal.SIGSTOP)  # stands for one in uninterruptible sleep: it does not exit by itself
    try:
        started = time.monotonic()
        assert runner.wait_bounded(stuck, 0.3) is False
        assert time.monotonic() - started < 5
    finally:
        stuck.kill()
        stuck.wait()


def test_descendants_follow_parent_links_only() -> None:
    from autoresearch.supervise import descendants

    table = {10: (1, "S"), 11: (10, "S"), 12: (11, "Z"), 13: (11, "R"), 20: (1, "S"), 21: (20, "S")}
    assert descendants(table, 10) == {11, 13}
    assert descendants(table, 10, live_only=False) == {11, 12, 13}
    assert descendants(table, 21) == set()


def test_a_killed_harness_leaves_no_new_session_daemon_behind(tmp_path: Path) -> None:
    """The supervisor asks to be told when the harness dies, and sweeps at once: no resume needed."""
    path = script(tmp_path, DAEMON)
    harness = subprocess.Popen([sys.executable, "-c", (
        "import os; from pathlib import Path; from autoresearch import runner; "
        f"runner.run_training(Path({str(path)!r}), env={{**os.environ, 'TEST_LINGER': '300'}}, "
        f"log_path=Path({str(tmp_path / 'log')!r}), wall_limit=300)")])
    assert wait_for(lambda: (tmp_path / "daemon.pid").exists() and (tmp_path / "daemon.pid").read_text())
    daemon = int((tmp_path / "daemon.pid").read_text())
    harness.send_signal(signal.SIGKILL)
    harness.wait()
    try:
        assert wait_for(lambda: gone(daemon), timeout=10)
    finally:
        with contextlib.suppress(OSError):
            os.kill(daemon, signal.SIGKILL)


def test_leaving_at_once_kills_the_training_and_its_daemons(tmp_path: Path) -> None:
    """The second Ctrl-C: `kill_now` with the recorded identity; the supervisor sweeps what left the group."""
    import threading

    path = script(tmp_path, DAEMON)
    started: list[runner.ProcessIdentity] = []
    results: list[runner.TrainingResult] = []
    thread = threading.Thread(target=lambda: results.append(
        train(path, wall_limit=120, on_start=started.append, env={"TEST_LINGER": "120"})))
    thread.start()
    assert wait_for(lambda: (tmp_path / "daemon.pid").exists() and (tmp_path / "daemon.pid").read_text())
    daemon = int((tmp_path / "daemon.pid").read_text())
    try:
        runner.kill_now(started[0])
        thread.join(timeout=30)
        assert results and results[0].returncode == -signal.SIGKILL
        assert gone(daemon)
        runner.kill_now(runner.ProcessIdentity(os.getpid(), os.getpgrp(), runner.start_time(os.getpid()),
                                               started[0].boot_id, "not-our-marker"))  # not ours: a no-op
    finally:
        with contextlib.suppress(OSError):
            os.kill(daemon, signal.SIGKILL)


def test_abandoning_a_step_tells_a_supervisor_to_sweep(tmp_path: Path) -> None:
    """kill_child_groups (Ctrl-C during evaluation, the second Ctrl-C): the supervisor is not killed blind."""
    path = script(tmp_path, DAEMON)
    env = {**os.environ, "TEST_LINGER": "120"}
    process = subprocess.Popen(runner.training_command(path), cwd=tmp_path, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: (tmp_path / "daemon.pid").exists() and (tmp_path / "daemon.pid").read_text())
        daemon = int((tmp_path / "daemon.pid").read_text())
        runner.kill_child_groups(grace=0.0)
        assert runner.wait_bounded(process, 15) and wait_for(lambda: gone(daemon), timeout=5)
    finally:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((tmp_path / "daemon.pid").read_text()), signal.SIGKILL)
        process.wait(timeout=5)
