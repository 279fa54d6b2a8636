"""sandbox.py and childenv.py: the rule sets (pure, milliseconds), then Landlock on real processes.

The rules are checked on made-up paths. The Landlock tests run a real child process that applies a
policy and then tries, by every route a train.py has (Python, a child shell, another trial's
directory, a TCP connection, a signal to its parent), to reach what the policy denies; they are
skipped, with the reason, where the kernel offers no Landlock. The fallback (`audit-hook`, forced
with $AUTORESEARCH_ISOLATION) is tested on every machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autoresearch import childenv, sandbox
from autoresearch.errors import UserError
from autoresearch.runconfig import load_config

ABI = sandbox.landlock_abi()
needs_landlock = pytest.mark.skipif(ABI == 0, reason="this kernel offers no Landlock (or it is turned off): "
                                                     "only the audit-hook fallback can be tested here")


# --- The rules -------------------------------------------------------------------------------------


def rules(**overrides: object) -> sandbox.Policy:
    settings = dict(abi=7, worktree="/home/u/proj/runs/t/worktree", trial_dir="/home/u/proj/runs/t/trial-0003",
                    data_dir="/home/u/.cache/autoresearch/datasets/climbmix",
                    compile_cache="/home/u/proj/runs/t/compile-cache",
                    python_paths=["/usr/lib/python3.11", "/home/u/venv/lib/python3.11/site-packages",
                                  "/home/u/proj", "/home/u", "/home/u/src/autoresearch"],
                    private_roots=["/home/u/proj/runs/t", "/home/u/proj"], devices=["/dev/null", "/dev/nvidia0"])
    settings.update(overrides)
    return sandbox.training_policy(**settings)  # type: ignore[arg-type]


def test_training_reads_its_worktree_python_and_the_train_split_only() -> None:
    policy = rules()
    assert policy.mode == "landlock-v7" and policy.landlock
    data = "/home/u/.cache/autoresearch/datasets/climbmix"
    assert {f"{data}/train.bin", f"{data}/train.docs.npy", f"{data}/tokenizer.json", f"{data}/token_bytes.npy",
            f"{data}/manifest.json"} <= set(policy.read)
    assert "/home/u/proj/runs/t/worktree" in policy.read
    assert {"/usr/lib/python3.11", "/home/u/venv/lib/python3.11/site-packages", "/home/u/src/autoresearch",
            "/usr", "/etc", "/proc"} <= set(policy.read)
    every_path = set(policy.read) | set(policy.write) | set(policy.devices)
    for denied in ("val.bin", "val.docs.npy", "holdout.bin", "holdout.docs.npy", "eval-rows-"):
        assert not any(path.endswith(denied) for path in every_path), denied
    assert data not in every_path  # the directory itself: no listing, no other file of it


def test_a_python_path_that_contains_a_private_root_is_dropped() -> None:
    """The checkout or `~` on sys.path would reopen other trials' weights and the user's files."""
    policy = rules()
    assert set(policy.dropped) == {"/home/u/proj", "/home/u"}
    assert not any(path in ("/home/u/proj", "/home/u", "/home/u/proj/runs/t") for path in policy.read)
    # a Python installation inside the dataset's parent is dropped too (it would expose val.bin)
    inside = rules(python_paths=["/home/u/.cache/autoresearch/datasets"])
    assert inside.dropped == ("/home/u/.cache/autoresearch/datasets",)


def test_training_writes_its_trial_directory_the_compile_cache_and_a_private_tmp() -> None:
    policy = rules()
    assert policy.write[:2] == ("/home/u/proj/runs/t/trial-0003", "/home/u/proj/runs/t/compile-cache")
    assert policy.tmp_dir == "/home/u/proj/runs/t/trial-0003/.tmp"
    assert not any(path.startswith("/home/u/proj/runs/t/trial-0000") for path in policy.read + policy.write)
    assert policy.devices == ("/dev/null", "/dev/nvidia0") and policy.no_network


def test_the_evaluator_reads_its_weights_and_no_split() -> None:
    data = "/d/climbmix"
    policy = sandbox.evaluator_policy(abi=7, worktree="/p/runs/t/worktree", weights="/p/runs/t/trial-0002/model.pt",
                                      scratch="/tmp/autoresearch-eval-x", data_dir=data, compile_cache=None,
                                      python_paths=["/usr/lib/python3.11", "/d"], private_roots=["/p/runs/t"])
    assert "/p/runs/t/trial-0002/model.pt" in policy.read and "/p/runs/t/worktree" in policy.read
    assert {f"{data}/tokenizer.json", f"{data}/manifest.json", f"{data}/token_bytes.npy"} <= set(policy.read)
    every_path = set(policy.read) | set(policy.write)
    assert not any(path.endswith((".bin", ".docs.npy")) for path in every_path)
    assert policy.dropped == ("/d",) and policy.write[0] == "/tmp/autoresearch-eval-x"


def test_policies_travel_as_json_and_report_denials_of_watched_names() -> None:
    policy = rules()
    again = sandbox.Policy.from_json(policy.to_json())
    assert again == policy and isinstance(again.read, tuple)
    line = "cat: /home/u/.cache/autoresearch/datasets/climbmix/val.bin: Permission denied"
    assert sandbox.denial_in_line(line, policy) == "val.bin"
    assert sandbox.denial_in_line("PermissionError: [Errno 13] Permission denied: '../trial-0000/model.pt'",
                                  policy) == "model.pt"
    assert sandbox.denial_in_line("cat: /etc/shadow: Permission denied", policy) is None
    assert sandbox.denial_in_line("reading val.bin went fine", policy) is None
    assert sandbox.denial_in_line(line, rules(abi=0)) is None  # the audit hook has its own message


def test_the_handled_rights_follow_the_abi() -> None:
    assert sandbox.handled_fs(1) == (1 << 13) - 1
    assert sandbox.handled_fs(3) == (1 << 15) - 1  # + REFER (2) + TRUNCATE (3)
    assert sandbox.handled_fs(7) == (1 << 16) - 1  # + IOCTL_DEV (5)
    assert sandbox.mode_for(0) == "audit-hook" and sandbox.mode_for(7) == "landlock-v7"


# --- The environment of every child ----------------------------------------------------------------


def test_child_env_drops_credentials_and_keeps_what_is_named() -> None:
    base = {"ANTHROPIC_API_KEY": "sk-1", "ANTHROPIC_BASE_URL": "http://x", "OPENAI_API_KEY": "sk-2",
            "HF_TOKEN": "hf", "GITHUB_TOKEN": "gh", "AWS_SECRET_ACCESS_KEY": "a", "PATH": "/usr/bin",
            "TOKENIZERS_PARALLELISM": "false", "AUTORESEARCH_EVAL_TOKENS": "4096", "HOME": "/root"}
    env = childenv.child_env({"EXTRA": "1"}, base=base)
    assert env == {"PATH": "/usr/bin", "TOKENIZERS_PARALLELISM": "false", "AUTORESEARCH_EVAL_TOKENS": "4096",
                   "HOME": "/root", "EXTRA": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    agent = childenv.child_env(base=base, keep=["ANTHROPIC_API_KEY"])
    assert agent["ANTHROPIC_API_KEY"] == "sk-1" and "OPENAI_API_KEY" not in agent


# --- Landlock on real processes ----------------------------------------------------------------------


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / name for name in ("worktree", "trial", "other_trial", "cache", "data", "home")}
    for path in paths.values():
        path.mkdir()
    for name in ("train.bin", "val.bin", "holdout.bin", "manifest.json", "eval-rows-1.npy"):
        (paths["data"] / name).write_text(f"contents of {name}\n")
    (paths["other_trial"] / "model.pt").write_text("another trial's weights\n")
    (paths["home"] / "notes.txt").write_text("the user's files\n")
    return paths


PROBE = textwrap.dedent('''
    import json, os, socket, subprocess, sys
    from autoresearch import sandbox
    mode = sandbox.apply_from_environment()
    paths = json.loads(sys.argv[1])
    def can_read(path):
        try:
            open(path).read()
            return True
        except PermissionError:
            return False
    def can_write(path):
        try:
            open(path, "w").write("x")
            return True
        except PermissionError:
            return False
    shell = subprocess.run(["sh", "-c", f"cat {paths['data']}/v''al.bin"], capture_output=True, text=True)
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=2).close()
        network = True
    except PermissionError:
        network = False
    try:
        os.kill(os.getppid(), 0)
        signal_parent = True
    except PermissionError:
        signal_parent = False
    print(json.dumps({
        "mode": mode, "tmpdir": os.environ.get("TMPDIR"),
        "train": can_read(paths["data"] + "/train.bin"), "val": can_read(paths["data"] + "/val.bin"),
        "holdout": can_read(paths["data"] + "/holdout.bin"), "rows": can_read(paths["data"] + "/eval-rows-1.npy"),
        "weights": can_read(paths["other_trial"] + "/model.pt"), "home": can_read(paths["home"] + "/notes.txt"),
        "via_proc_root": can_read(f"/proc/1/root{paths['data']}/val.bin"),
        "write_trial": can_write(paths["trial"] + "/model.pt"), "write_worktree": can_write(paths["worktree"] + "/x"),
        "write_train_bin": can_write(paths["data"] + "/train.bin"),
        "shell_val": shell.stdout, "shell_err": shell.stderr.strip(), "network": network,
        "signal_parent": signal_parent,
    }))
''')


def probe(layout: dict[str, Path], env_extra: dict[str, str]) -> dict:
    policy = sandbox.training_policy(
        abi=sandbox.landlock_abi(), worktree=layout["worktree"], trial_dir=layout["trial"], data_dir=layout["data"],
        compile_cache=layout["cache"], python_paths=sandbox.python_paths(),
        private_roots=[layout["other_trial"].parent], devices=sandbox.device_files())
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        env = childenv.child_env({**env_extra, sandbox.ENV_POLICY: policy.to_json()})
        done = subprocess.run([sys.executable, "-c", PROBE, json.dumps({k: str(v) for k, v in layout.items()}),
                               str(server.getsockname()[1])], env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@needs_landlock
def test_landlock_stops_every_route_to_what_training_may_not_read(layout: dict[str, Path]) -> None:
    seen = probe(layout, {})
    assert seen["mode"] == f"landlock-v{ABI}"
    assert seen["train"] and seen["write_trial"]  # what training needs still works
    assert seen["tmpdir"] == str(layout["trial"] / ".tmp")
    assert not seen["val"] and not seen["holdout"] and not seen["rows"]
    assert not seen["weights"] and not seen["home"] and not seen["via_proc_root"]
    assert not seen["write_worktree"] and not seen["write_train_bin"]
    # a child shell, with a name the audit hook's command-line check cannot see
    assert seen["shell_val"] == "" and "Permission denied" in seen["shell_err"]
    if ABI >= 4:
        assert not seen["network"]
    if ABI >= 6:
        assert not seen["signal_parent"]


def test_the_fallback_changes_nothing_and_says_so(layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Landlock (forced here) the mode is audit-hook: a child shell still reads val — the escape."""
    monkeypatch.setenv(sandbox.ENV_ISOLATION, "audit-hook")
    assert sandbox.isolation_mode() == "audit-hook"
    seen = probe(layout, {})
    assert seen["mode"] == "audit-hook"
    assert seen["val"] and seen["shell_val"] == "contents of val.bin\n" and seen["weights"]


def test_a_policy_that_cannot_be_applied_ends_the_process_with_one_line() -> None:
    env = childenv.child_env({sandbox.ENV_POLICY: json.dumps({"mode": "landlock-v7", "abi": "seven"})})
    done = subprocess.run([sys.executable, "-c", "from autoresearch import sandbox; sandbox.apply_from_environment();"
                           " print('ran on')"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == sandbox.ISOLATION_ERROR_EXIT and "ran on" not in done.stdout
    assert done.stderr.startswith("error: isolation: could not apply the sandbox") and "Traceback" not in done.stderr


def test_require_isolation_refuses_to_start_without_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sandbox.ENV_ISOLATION, "audit-hook")
    with pytest.raises(UserError, match="--require-isolation: .*AUTORESEARCH_ISOLATION turns the kernel sandbox off"):
        load_config({"require_isolation": True}, project_dir=tmp_path, environ={})
    assert load_config({}, project_dir=tmp_path, environ={}).require_isolation is False


@needs_landlock
def test_require_isolation_starts_where_landlock_is_available(tmp_path: Path) -> None:
    assert load_config({"require_isolation": True}, project_dir=tmp_path, environ={}).require_isolation
    assert os.environ.get(sandbox.ENV_ISOLATION) is None


def test_run_require_isolation_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from autoresearch import cli

    monkeypatch.setenv(sandbox.ENV_ISOLATION, "audit-hook")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--require-isolation", "--project-dir", str(tmp_path), "--max-trials", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --require-isolation: ") and "Traceback" not in err and err.count("\n") == 1


def test_temporary_files_go_to_the_private_directory_even_if_tmp_was_used_before(tmp_path: Path) -> None:
    policy = sandbox.Policy(mode=sandbox.mode_for(ABI), abi=ABI, read=tuple(sandbox.python_paths()),
                            write=(str(tmp_path / "trial"),), tmp_dir=str(tmp_path / "trial" / ".tmp"))
    env = childenv.child_env({sandbox.ENV_POLICY: policy.to_json()})
    code = ("import tempfile; before = tempfile.gettempdir(); from autoresearch import sandbox; "
            "sandbox.apply_from_environment(); f = tempfile.NamedTemporaryFile(delete=False); print(before, f.name)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    before, created = done.stdout.split()
    assert before != str(tmp_path / "trial" / ".tmp") and created.startswith(str(tmp_path / "trial" / ".tmp") + "/")


def test_a_python_path_that_reaches_a_private_root_through_a_link_is_dropped(tmp_path: Path) -> None:
    real_home = tmp_path / "disk" / "home"
    (real_home / "data").mkdir(parents=True)
    (tmp_path / "home").symlink_to(real_home)  # /home -> /disk/home, say
    policy = sandbox.training_policy(abi=7, worktree=tmp_path / "wt", trial_dir=tmp_path / "trial",
                                     data_dir=real_home / "data", compile_cache=tmp_path / "cache",
                                     python_paths=[str(tmp_path / "home")], private_roots=[], system_read=())
    assert policy.dropped == (str(tmp_path / "home"),)
