"""Benchmark train.py on one GPU in one call: throughput, MFU, start-up, memory, evaluation time.

    # on the GPU machine, with the docs corpus copied into the git-ignored .devdata/ of the checkout:
    python bench/bench_train.py --prepare .devdata/docs-corpus --out bench-out
    python bench/bench_train.py --data-dir ~/.cache/autoresearch/datasets/climbmix --out bench-out
    python bench/bench_train.py --attention-only                     # no dataset needed
    python bench/bench_train.py --device cpu --tiny --prepare sample --vocab-size 512 --out /tmp/b  # smoke

What it measures, in order (each part prints plain `key: value` lines as it goes):

1. attention: forward+backward milliseconds of one layer's attention at the baseline's shape
   (B=32, H=4, T=2048, D=128, bf16) for the kernels train.py can use: SDPA is_causal (the "L"
   layers), SDPA with a boolean sliding-window mask (the "S" layers without compile), compiled
   flex_attention with a sliding-window BlockMask (the "S" layers under compile, the default).
2. dataset: with --prepare SOURCE, builds one (timed) into <out>/cache; else uses --data-dir.
3. training: `python train.py` exactly as the harness runs it (AUTORESEARCH_TRAIN_ONLY=1), with a
   short budget, twice: "cold" with empty inductor/Triton caches, then "warm" reusing them.
   From each: the start-up breakdown (imports, build, data, first step = compile, steps 1-9 =
   warm-up), steady tok/sec (median of the timed steps, and timed tokens / training seconds),
   MFU, peak VRAM and the summary.
4. evaluation: the harness's evaluator (`run_evaluator`, a separate process) on the warm run's
   weights at the default number of validation tokens (fewer if the val split is smaller: the
   tokens scored and the rate are reported, and the time projected to the default count).

With --out DIR it writes DIR/bench_train.json and DIR/bench_train.md and keeps the run logs
(DIR/cold.log, DIR/warm.log, DIR/eval.log). A default run (30 s budget per training run) takes
about 4-6 minutes on an H100 when the compile is cold.

It does not measure the quality of a run (val_bpb after the full budget): that is what the loop does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from autoresearch import contract  # noqa: E402
from autoresearch.atomic import write_text_atomic  # noqa: E402
from autoresearch.knobs import read_knobs, set_knobs  # noqa: E402

TINY_KNOBS = {"DEPTH": 2, "ASPECT_RATIO": 32, "HEAD_DIM": 32, "DEVICE_BATCH_SIZE": 4, "TOTAL_BATCH_SIZE": 2**10,
              "EVAL_BATCH_SIZE": 8}
WARMUP_STEPS = 10  # train.py keeps its first 10 steps off the training clock

PROGRESS_LINE = re.compile(r"^step (?P<step>\d+) .*?\| dt: (?P<dt_ms>\d+)ms \| tok/sec: (?P<tok>[\d,]+) \| "
                           r"mfu: (?P<mfu>[\d.]+%|n/a)", re.MULTILINE)
STARTUP_LINE = re.compile(r"^startup: imports (?P<imports_s>[\d.]+)s \| build (?P<build_s>[\d.]+)s \| "
                          r"data (?P<data_s>[\d.]+)s \| compile\+warmup (?P<compile_warmup_s>[\d.]+)s", re.MULTILINE)
BATCH_LINE = re.compile(r"^batch: (?P<tokens>[\d,]+) tokens per step", re.MULTILINE)
SUMMARY_LINE = re.compile(r"^(\w+):\s+(\S+)$")


# --- 1. attention kernels ------------------------------------------------------------------------


def _time_ms(fn, warmup: int, repeat: int, sync) -> float:
    for _ in range(warmup):
        fn()
    sync()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync()
    return (time.perf_counter() - started) / repeat * 1000


def bench_attention(device: str, tiny: bool) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if tiny:
        B, H, T, D, dtype = 2, 2, 256, 32, torch.float32
    else:
        B, H, T, D, dtype = 32, 4, 2048, 128, torch.bfloat16
    window = T // 2
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    q, k, v = (torch.randn(B, H, T, D, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(B, H, T, D, device=device, dtype=dtype)
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    bool_mask = (j <= i) & (i - j < window)

    def causal_window(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (q_idx - kv_idx < window)

    def causal(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx

    variants = {
        "sdpa_causal": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "sdpa_window_mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask),
    }
    if device == "cuda":  # flex has no CPU backward
        window_blocks = create_block_mask(causal_window, None, None, T, T, device=device)
        causal_blocks = create_block_mask(causal, None, None, T, T, device=device)
        compiled_flex = torch.compile(flex_attention, dynamic=False)
        variants["flex_window"] = lambda: compiled_flex(q, k, v, block_mask=window_blocks)
        variants["flex_causal"] = lambda: compiled_flex(q, k, v, block_mask=causal_blocks)
    shape = f"B={B} H={H} T={T} D={D} {str(dtype).removeprefix('torch.')} window={window} device={device}"
    print(f"attention_shape: {shape}", flush=True)
    results: dict = {"shape": shape}
    for name, forward in variants.items():
        def step(forward=forward):
            forward().backward(grad)
        try:
            ms = _time_ms(step, warmup=3, repeat=10, sync=sync)
            results[f"{name}_fwd_bwd_ms"] = round(ms, 3)
            print(f"attention_{name}_fwd_bwd_ms: {ms:.2f}", flush=True)
        except Exception as error:  # report and go on: one kernel missing must not hide the others
            results[f"{name}_fwd_bwd_ms"] = None
            results[f"{name}_error"] = f"{type(error).__name__}: {str(error)[:200]}"
            print(f"attention_{name}_fwd_bwd_ms: failed ({results[f'{name}_error']})", flush=True)
    return results


# --- 2. dataset ------------------------------------------------------------------------------------


def prepare_dataset(source: str, cache: Path, vocab_size: int) -> tuple[Path, float]:
    from autoresearch.data.build import prepare_dataset as build

    started = time.perf_counter()
    directory = build(source, vocab_size=vocab_size, cache_dir=cache, show_progress=False)
    seconds = time.perf_counter() - started
    print(f"dataset_prepare_seconds: {seconds:.1f}", flush=True)
    return directory, seconds


# --- 3. training runs ------------------------------------------------------------------------------


def parse_run(stdout: str) -> dict:
    """The numbers in one train.py log: start-up, per-step rates, summary."""
    steps = [{"step": int(m["step"]), "dt_s": int(m["dt_ms"]) / 1000, "tok_per_sec": int(m["tok"].replace(",", "")),
              "mfu_percent": float(m["mfu"][:-1]) if m["mfu"] != "n/a" else None}
             for m in PROGRESS_LINE.finditer(stdout)]
    by_step = {entry["step"]: entry for entry in steps}  # a step printed twice (the last line) counts once
    timed = [entry for step, entry in sorted(by_step.items()) if step >= WARMUP_STEPS]
    summary_text = stdout.split("\n---\n", 1)[1] if "\n---\n" in stdout else ""
    summary = {}
    for line in summary_text.strip().splitlines():
        if match := SUMMARY_LINE.match(line):
            value = float(match[2])
            summary[match[1]] = value if math.isfinite(value) else None  # val_bpb is nan under the harness
    startup = STARTUP_LINE.search(stdout)
    batch = BATCH_LINE.search(stdout)
    result: dict = {
        "startup": {key: float(value) for key, value in startup.groupdict().items()} if startup else None,
        "first_step_s": by_step[0]["dt_s"] if 0 in by_step else None,  # compile of model + optimizer
        "warmup_steps_1_9_s": (round(sum(by_step[s]["dt_s"] for s in range(1, WARMUP_STEPS)), 3)
                               if all(s in by_step for s in range(1, WARMUP_STEPS)) else None),
        "timed_steps_logged": len(timed),
        "step_seconds_median": statistics.median(e["dt_s"] for e in timed) if timed else None,
        "tok_per_sec_median": statistics.median(e["tok_per_sec"] for e in timed) if timed else None,
        "mfu_percent_median": (statistics.median(e["mfu_percent"] for e in timed)
                               if timed and timed[0]["mfu_percent"] is not None else None),
        "tokens_per_step": int(batch["tokens"].replace(",", "")) if batch else None,
        "summary": summary,
    }
    steps_done, seconds = summary.get("num_steps"), summary.get("training_seconds")
    if result["tokens_per_step"] and steps_done and seconds:
        result["tok_per_sec_overall"] = round((steps_done - WARMUP_STEPS) * result["tokens_per_step"] / seconds)
    if seconds is not None and summary.get("total_seconds") is not None:
        result["overhead_s"] = round(summary["total_seconds"] - seconds, 1)  # everything but the timed steps
    return result


def run_trial(directory: Path, env: dict[str, str], budget: float, label: str, timeout: float,
              log_dir: Path) -> dict:
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "train.py"], cwd=directory,
                              env={**env, contract.ENV_TIME_BUDGET: str(budget)},
                              capture_output=True, text=True, timeout=timeout)
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout.decode(errors="replace") if isinstance(expired.stdout, bytes) else expired.stdout or ""
        stderr, code = f"killed after {timeout:.0f}s", None
    wall = time.perf_counter() - started
    (log_dir / f"{label}.log").write_text(stdout + "\n--- stderr ---\n" + stderr)
    result = {"exit_code": code, "wall_s": round(wall, 1), **parse_run(stdout)}
    if code != 0:
        result["stderr_tail"] = stderr.strip().splitlines()[-3:]
    print(f"{label}_exit_code: {code}", flush=True)
    print(f"{label}_wall_seconds: {wall:.1f}", flush=True)
    for key in ("startup", "first_step_s", "warmup_steps_1_9_s", "tok_per_sec_median", "tok_per_sec_overall",
                "mfu_percent_median", "overhead_s"):
        print(f"{label}_{key}: {result.get(key)}", flush=True)
    for key in ("mfu_percent", "peak_vram_mb", "num_steps", "training_seconds", "total_seconds", "num_params_M"):
        print(f"{label}_{key}: {result['summary'].get(key)}", flush=True)
    if code != 0:
        print(f"{label}_stderr_tail: {result['stderr_tail']}", flush=True)
    return result


# --- 4. the harness's evaluator --------------------------------------------------------------------


def bench_evaluator(train_py: Path, weights: Path, data_dir: Path, seq_len: int, device: str, tokens: int | None,
                    timeout: float, log_dir: Path) -> dict:
    """Time the evaluator at `tokens` (default: the contract's count). A val split smaller than
    that is scored whole, and then once more at a quarter of it: the two runs separate the fixed
    cost (process start, import, build, load, causality probe) from the per-token rate, and give
    the time the evaluator would take at the full count."""
    from autoresearch.evaluate import run_evaluator

    if not weights.is_file():
        print("eval: skipped (the warm run saved no weights)", flush=True)
        return {"skipped": "the warm run saved no weights"}
    wanted = tokens or contract.DEFAULT_EVAL_TOKENS
    # the evaluator runs as `python -m autoresearch.evaluate` from a neutral directory: make this
    # checkout's package importable there even where it is not pip-installed (a bare GPU machine)
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))

    def evaluate(count: int, log_name: str):
        started = time.perf_counter()
        result = run_evaluator(train_py, weights, data_dir, tokens=count, seq_len=seq_len, device=device,
                               timeout=timeout, log_path=log_dir / log_name, env={"PYTHONPATH": python_path})
        return result, time.perf_counter() - started

    result, wall = evaluate(wanted, "eval.log")
    out = {"ok": result.ok, "wall_s": round(wall, 1), "evaluator_seconds": result.seconds, "tokens_wanted": wanted,
           "tokens_scored": result.tokens, "bpb": result.bpb, "reason": result.reason}
    if result.ok and result.tokens >= wanted:
        out["projected_wall_s_at_wanted"] = out["wall_s"]
    elif result.ok and result.tokens >= 8 * seq_len:
        small, small_wall = evaluate(result.tokens // 4, "eval-quarter.log")
        if small.ok and small.tokens < result.tokens and wall > small_wall:
            rate = (result.tokens - small.tokens) / (wall - small_wall)
            fixed = max(0.0, wall - result.tokens / rate)
            out.update(fixed_s=round(fixed, 1), tokens_per_sec=round(rate),
                       projected_wall_s_at_wanted=round(fixed + wanted / rate, 1))
    for key, value in out.items():
        print(f"eval_{key}: {value}", flush=True)
    return out


# --- reporting -------------------------------------------------------------------------------------


def environment(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
            "cpu_count": os.cpu_count()}
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def _fmt(value, digits: int = 1) -> str:
    if value is None or isinstance(value, bool):
        return "n/a" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = ["# bench_train", "", f"`{results['command']}`", "",
             f"{env.get('gpu', env['device'])} | torch {env['torch']} | python {env['python']} | "
             f"commit {env.get('git_commit') or 'n/a'} | budget {results['budget_s']:.0f} s per run | "
             f"seq_len {results['seq_len']}", ""]
    attention = results.get("attention") or {}
    if attention:
        lines += [f"## Attention, forward + backward ({attention.get('shape')})", "", "| kernel | ms |", "| --- | --- |"]
        lines += [f"| {key.removesuffix('_fwd_bwd_ms')} | {_fmt(value, 2)} |" for key, value in attention.items()
                  if key.endswith("_fwd_bwd_ms")]
        lines.append("")
    runs = results.get("runs") or {}
    if runs:
        names = list(runs)
        lines += ["## Training runs", "", "| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]

        def row(label, get, digits=1):
            lines.append(f"| {label} | " + " | ".join(_fmt(get(runs[name]), digits) for name in names) + " |")

        row("exit code", lambda r: r["exit_code"])
        row("wall s", lambda r: r["wall_s"])
        for key in ("imports_s", "build_s", "data_s", "compile_warmup_s"):
            row(f"start-up: {key}", lambda r, key=key: (r["startup"] or {}).get(key))
        row("first step s (compile)", lambda r: r["first_step_s"], 2)
        row("steps 1-9 s (warm-up)", lambda r: r["warmup_steps_1_9_s"], 2)
        row("step s (median)", lambda r: r["step_seconds_median"], 3)
        row("tok/s (median step)", lambda r: r["tok_per_sec_median"], 0)
        row("tok/s (timed tokens / training s)", lambda r: r.get("tok_per_sec_overall"), 0)
        row("MFU % (summary)", lambda r: r["summary"].get("mfu_percent"), 2)
        row("peak VRAM MiB", lambda r: r["summary"].get("peak_vram_mb"), 0)
        row("steps", lambda r: r["summary"].get("num_steps"), 0)
        row("params M", lambda r: r["summary"].get("num_params_M"))
        row("total s - training s", lambda r: r.get("overhead_s"))
        lines.append("")
    evaluation = results.get("eval")
    if evaluation:
        lines += ["## Evaluator (separate process, the harness's scorer)", ""]
        lines += [f"- {key}: {_fmt(value, 3 if key == 'bpb' else 1)}" for key, value in evaluation.items()]
        lines.append("")
    if results.get("dataset"):
        lines += [f"Dataset: {results['dataset']['path']} (prepared in {_fmt(results['dataset'].get('prepare_s'))} s)", ""]
    return "\n".join(lines)


def write_results(out: Path | None, results: dict) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("bench_train.json", json.dumps(results, indent=2) + "\n"), ("bench_train.md", markdown(results))):
        write_text_atomic(out / name, text)
    print(f"results: {out / 'bench_train.json'} and {out / 'bench_train.md'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="a prepared dataset (for the training runs)")
    parser.add_argument("--prepare", metavar="SOURCE", help="build the dataset first from SOURCE (a directory or glob "
                        "of .parquet/.txt files, or `sample`) into the cache (reused when already built)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="with --prepare: cache root (default $AUTORESEARCH_CACHE_DIR or ~/.cache/autoresearch)")
    parser.add_argument("--vocab-size", type=int, default=8192, help="with --prepare: BPE vocabulary (default 8192)")
    parser.add_argument("--out", type=Path, help="write bench_train.json, bench_train.md and the logs here")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--budget", type=float, default=30.0, help="training seconds per run (default 30)")
    parser.add_argument("--seq-len", type=int, default=None, help="AUTORESEARCH_MAX_SEQ_LEN (default 2048; tiny: 64)")
    parser.add_argument("--tiny", action="store_true", help="TINY_KNOBS and small shapes: a CPU smoke test")
    parser.add_argument("--attention-only", action="store_true")
    parser.add_argument("--skip-attention", action="store_true")
    parser.add_argument("--skip-cold", action="store_true", help="one (warm-cache) training run only")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--timeout", type=float, default=400.0, help="seconds per training run or evaluation")
    parser.add_argument("--eval-tokens", type=int, default=None,
                        help=f"tokens the evaluator scores (default {contract.DEFAULT_EVAL_TOKENS:,}, the contract's)")
    args = parser.parse_args()
    if not args.attention_only and args.data_dir is None and args.prepare is None:
        parser.error("--data-dir or --prepare is needed for the training runs (or pass --attention-only)")

    seq_len = args.seq_len or (64 if args.tiny else contract.DEFAULT_MAX_SEQ_LEN)
    results: dict = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                     "environment": environment(args.device), "budget_s": args.budget, "seq_len": seq_len}
    if not args.skip_attention:
        results["attention"] = bench_attention(args.device, args.tiny)
        write_results(args.out, results)
        if args.device == "cuda":
            import torch

            torch.cuda.empty_cache()  # leave the GPU's memory to the training runs
    if args.attention_only:
        return

    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        work = Path(scratch)
        log_dir = args.out if args.out is not None else work
        log_dir.mkdir(parents=True, exist_ok=True)
        if args.prepare:
            data_dir, seconds = prepare_dataset(args.prepare, args.cache_dir or contract.cache_dir(), args.vocab_size)
            results["dataset"] = {"path": str(data_dir), "prepare_s": round(seconds, 1), "source": args.prepare}
        else:
            data_dir = args.data_dir.expanduser().resolve()
            results["dataset"] = {"path": str(data_dir)}
        trial = work / "trial"
        trial.mkdir()
        source = (REPO_ROOT / "train.py").read_text()
        if args.tiny:
            source = set_knobs(source, TINY_KNOBS)
        (trial / "train.py").write_text(source)
        shutil.copy(REPO_ROOT / "prepare.py", trial / "prepare.py")
        results["knobs"] = {name: knob.value for name, knob in read_knobs(source).items()}
        weights = work / "model.pt"
        env = {**os.environ, contract.ENV_DATA_DIR: str(data_dir), contract.ENV_DEVICE: args.device,
               contract.ENV_TRAIN_ONLY: "1", contract.ENV_MAX_SEQ_LEN: str(seq_len),
               contract.ENV_WEIGHTS_PATH: str(weights), contract.ENV_CACHE_DIR: str(work / "cache"),
               # fresh compile caches: the first run compiles everything, the second finds it cached
               "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor-cache"), "TRITON_CACHE_DIR": str(work / "triton-cache")}
        results["runs"] = {}
        for label in ("warm",) if args.skip_cold else ("cold", "warm"):
            results["runs"][label] = run_trial(trial, env, args.budget, label, args.timeout, log_dir)
            write_results(args.out, results)
        if not args.skip_eval:
            results["eval"] = bench_evaluator(trial / "train.py", weights, data_dir, seq_len, args.device,
                                              args.eval_tokens, args.timeout, log_dir)
            write_results(args.out, results)
    if args.out is None:
        print(markdown(results))


if __name__ == "__main__":
    main()
