"""The harness's own number: bits per byte of a trained `train.py` model, scored in its own process.

    python -m autoresearch.evaluate --train-py train.py --weights model.pt --data-dir DATASET

The loop calls `run_evaluator`, which starts that command in a process (and process group) of its
own with a timeout and reads back its verdict, an `EvalResult` (defined in verdict.py, which
scoring.py imports too, and re-exported here). The program itself lives in
`autoresearch/scoring.py` (it imports torch); this module does not import torch, so the harness
process that only starts evaluations stays light. `pack_eval_rows`, `bits_per_byte`,
`causality_probe` and the other names of the scoring program are still reachable here
(`autoresearch.evaluate.bits_per_byte`): they are loaded from scoring.py on first use.

Inside the evaluator process (scoring.py): the validation rows are packed and read BEFORE the
trial's train.py is imported; an audit hook then ends the process with a `tamper` verdict if
train.py opens, links or copies the validation or holdout files or the packed-rows cache; the
functions the score depends on (torch's, numpy's, builtins, scoring.py's own and prepare.py's)
are captured before and compared after; the rows and byte lengths are hashed before and checked
after; a causality probe runs on every scored model. Exit code 0 means a verdict was produced
(good or a model-attributable failure); 2 means the harness itself could not evaluate.

What this does NOT protect against: the evaluator runs the agent's code in-process, so a train.py
written to subvert it can still do so (ctypes, patching objects that are not checked, restoring a
patch before the check runs); the causality probe catches a model that looks ahead by mistake,
not one written to pass the probe. It is a guard against an optimizer that drifts into
measurement-breaking changes, not a sandbox against a deliberate attacker. The holdout split,
scored rarely and never used for decisions, is the check against overfitting the validation set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from autoresearch.errors import UserError
from autoresearch.launch import ENV_HARNESS_PID
from autoresearch.verdict import FAILURE_KINDS, STARTED_MODEL_MARKER, EvalResult, Evaluator  # noqa: F401 - re-exported

EVALUATOR_KILL_GRACE = 0.5  # seconds a stopped evaluator gets before its supervisor sweeps

# Names of the scoring program (scoring.py, which imports torch) reachable from this module.
_SCORING_NAMES = frozenset({
    "PACKING_VERSION", "BpbResult", "ProbeResult", "ModelError", "default_seq_len", "default_eval_tokens",
    "pack_eval_rows", "bits_per_byte", "causality_probe", "snapshot_functions", "_check_integrity",
    "resolve_device", "score", "main",
})


def __getattr__(name: str):
    """Load scoring.py (and torch) only when one of its names is asked for."""
    if name in _SCORING_NAMES:
        from autoresearch import scoring

        return getattr(scoring, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- The loop's side: run the evaluator in a subprocess -----------------------------------------


def run_evaluator(train_py: Path, weights: Path, data_dir: Path, *, split: str = "val", tokens: int | None = None,
                  seq_len: int | None = None, batch_size: int | None = None, device: str = "auto",
                  timeout: float = 600.0, log_path: Path | None = None, env: dict | None = None,
                  private_roots: tuple[Path, ...] = (), compile_cache: Path | None = None) -> EvalResult:
    """Score a trial in a fresh `python -m autoresearch.evaluate` process; kill it past `timeout`.

    Returns the verdict (failure_kind "timeout" when killed, "model_error" when the process died
    without one after train.py was imported). Raises UserError when the evaluator could not even
    start on its own terms (bad arguments, missing dataset): that is the harness's problem, not
    the trial's. Its stdout and stderr go to `log_path`.

    The evaluator runs under supervise.py (no process train.py's module code starts outlives the
    evaluation), with the environment of every harness child (childenv.py: no credentials) and,
    where Landlock is available, the evaluator's sandbox (sandbox.py), which scoring.py applies
    once the rows are in memory: the worktree, the weights, Python, its scratch directory, and
    nothing of the dataset. `private_roots` (the run directory, the checkout) are never readable.
    The compile caches (inductor, Triton, CUDA) go to `compile_cache`, else to the scratch directory.
    """
    from autoresearch import childenv, runner, sandbox, supervise

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autoresearch-eval-") as scratch:
        json_out = Path(scratch) / "verdict.json"
        log_file = Path(log_path) if log_path is not None else Path(scratch) / "evaluate.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        train_py, weights = Path(train_py).resolve(), Path(weights).resolve()
        compile_cache = Path(compile_cache) if compile_cache is not None else Path(scratch) / "compile-cache"
        command = [sys.executable, supervise.__file__, sys.executable, "-m", "autoresearch.evaluate",
                   "--train-py", str(train_py), "--weights", str(weights),
                   "--data-dir", str(Path(data_dir).resolve()), "--split", split, "--device", device,
                   "--json-out", str(json_out)]
        for flag, value in (("--tokens", tokens), ("--seq-len", seq_len), ("--batch-size", batch_size)):
            if value is not None:
                command += [flag, str(value)]
        policy = sandbox.evaluator_policy(
            abi=sandbox.landlock_abi(), worktree=train_py.parent, weights=weights, scratch=scratch,
            data_dir=Path(data_dir).resolve(), compile_cache=compile_cache, python_paths=sandbox.python_paths(),
            private_roots=[Path(root) for root in private_roots], devices=sandbox.device_files())
        marker = uuid.uuid4().hex
        caches = {  # the cache must be writable under the sandbox: never ~/.cache
            "TORCHINDUCTOR_CACHE_DIR": str(compile_cache / "torch-compile"), "TRITON_CACHE_DIR": str(compile_cache / "triton"),
            "CUDA_CACHE_PATH": str(compile_cache / "cuda")}
        # on Linux the evaluator asks to die with us (say, when we are SIGKILLed)
        child_env = childenv.child_env({**caches, **(env or {}), ENV_HARNESS_PID: str(os.getpid()),
                                        sandbox.ENV_POLICY: policy.to_json(), runner.ENV_TRIAL_MARKER: marker,
                                        supervise.ENV_KILL_GRACE: f"{EVALUATOR_KILL_GRACE:g}"})
        with open(log_file, "w") as log:
            # a neutral working directory: the harness package must come from its install, never
            # from a folder next to the trial's train.py
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env, cwd=scratch,
                                       start_new_session=True)
            try:
                returncode = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process, marker)
                log.write(f"\n[autoresearch] evaluator killed after {timeout:.0f}s\n")
                return EvalResult(ok=False, split=split, bpb=None, loss_nats=None, tokens=0, bytes=0,
                                  causal_ok=None, failure_kind="timeout",
                                  reason=f"evaluation ran past its {timeout:.0f}s limit and was killed",
                                  seconds=round(time.perf_counter() - started, 3))
            except BaseException:  # interrupted (Ctrl-C) while waiting: the evaluator must not outlive us
                _kill_group(process, marker)
                raise
            stuck = _kill_group(process, marker)  # whatever train.py's module code left behind
            if stuck:
                log.write(f"\n[autoresearch] process(es) {', '.join(map(str, stuck))} did not die after SIGKILL "
                          "(uninterruptible sleep?); going on without them\n")
        if json_out.is_file():
            try:
                return EvalResult.from_dict(json.loads(json_out.read_text()))
            except (ValueError, TypeError):
                pass
        log_text = log_file.read_text(errors="replace")
        tail = " | ".join(line for line in log_text.strip().splitlines()[-3:])
        if STARTED_MODEL_MARKER not in log_text:
            errors = [line for line in log_text.splitlines() if line.startswith("error: ")]
            detail = errors[-1][len("error: "):] if errors else f"exit code {returncode}: {tail}"
            raise UserError(f"the evaluator could not run: {detail}")
        return EvalResult(ok=False, split=split, bpb=None, loss_nats=None, tokens=0, bytes=0, causal_ok=None,
                          failure_kind="model_error",
                          reason=f"the evaluator died (exit code {returncode}) while running the model: {tail[-400:]}",
                          seconds=round(time.perf_counter() - started, 3))


def _kill_group(process: subprocess.Popen, marker: str = "") -> list[int]:
    """End the evaluator and everything it started; every wait bounded. The pids that would not die.

    The supervisor (our unreaped child, so its group id is ours) sweeps its descendants on SIGTERM;
    the group gets SIGKILL after that, and processes carrying the evaluation's marker last.
    """
    from autoresearch import runner

    return runner.stop_supervised(process, process.pid, marker, grace=EVALUATOR_KILL_GRACE)


if __name__ == "__main__":
    from autoresearch.launch import die_with_harness
    from autoresearch.scoring import main

    die_with_harness()  # an evaluator must not outlive a harness that was killed

    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: no atexit handler or thread left behind by train.py runs after the verdict
    os._exit(code)
