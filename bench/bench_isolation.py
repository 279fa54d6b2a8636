"""What the sandbox and the supervisor add to a trial's start-up: `python bench/bench_isolation.py`.

The start-up a trial spends outside its budget is judged (trust.startup_rule), so the harness's own
machinery must add little to it. This starts a train.py that imports torch and exits, ROUNDS times
each way, interleaved, and prints the median wall time of the process as the runner sees it:

- baseline: `python launch.py train.py` started directly (how the runner started training before
  the supervisor), no sandbox policy;
- supervised, audit-hook: `python supervise.py python launch.py train.py` (runner.run_training) with
  the fallback forced;
- supervised, Landlock: the same with the training policy applied (where the kernel offers it).

Also timed: computing the policy in the harness (python_paths, device_files, training_policy).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autoresearch import childenv, launch, runner, sandbox

ROUNDS = 7
TRAIN_PY = "import torch\nprint('imported torch', torch.__version__)\n"


def direct(train_py: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, launch.__file__, str(train_py)], cwd=train_py.parent, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.monotonic() - started


def supervised(train_py: Path, env: dict[str, str], trial: Path) -> float:
    result = runner.run_training(train_py, env=env, log_path=trial / "train.log", wall_limit=120)
    assert result.status == runner.OK, result.reason
    return result.seconds


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
    worktree, trial, cache, data = (root / name for name in ("worktree", "trial", "cache", "data"))
    for path in (worktree, trial, cache, data):
        path.mkdir()
    train_py = worktree / "train.py"
    train_py.write_text(TRAIN_PY)
    clock = time.perf_counter()
    policy = sandbox.training_policy(abi=sandbox.landlock_abi(), worktree=worktree, trial_dir=trial, data_dir=data,
                                     compile_cache=cache, python_paths=sandbox.python_paths(),
                                     private_roots=[root / "runs"], devices=sandbox.device_files())
    policy_ms = (time.perf_counter() - clock) * 1000
    plain = childenv.child_env()
    fallback = childenv.child_env({sandbox.ENV_ISOLATION: "audit-hook"})
    landlocked = childenv.child_env({sandbox.ENV_POLICY: policy.to_json()})
    times: dict[str, list[float]] = {"baseline (launch.py directly)": [], "supervised, audit-hook": []}
    if policy.landlock:
        times[f"supervised, {policy.mode}"] = []
    for _ in range(ROUNDS):
        times["baseline (launch.py directly)"].append(direct(train_py, plain))
        times["supervised, audit-hook"].append(supervised(train_py, fallback, trial))
        if policy.landlock:
            times[f"supervised, {policy.mode}"].append(supervised(train_py, landlocked, trial))
    print(f"load average {os.getloadavg()[0]:.2f}; policy computed in {policy_ms:.1f} ms "
          f"({len(policy.read)} readable, {len(policy.write)} writable paths)")
    print("| how | median s | min s | max s |\n| --- | ---: | ---: | ---: |")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} |")


if __name__ == "__main__":
    main()
