"""Benchmark train.py on a GPU: attention kernels, start-up (cold vs warm compile cache), throughput.

    python bench/bench_train.py --data-dir ~/.cache/autoresearch/datasets/climbmix      # on an H100
    python bench/bench_train.py --attention-only                                       # no dataset needed
    python bench/bench_train.py --device cpu --tiny --data-dir DATASET                 # smoke test, no GPU

Three parts, each printing plain `key: value` lines:

1. attention: forward+backward milliseconds of one layer's attention at the baseline's shape
   (B=DEVICE_BATCH_SIZE/4, H=4, T=2048, D=128, bf16) for the kernels train.py can use:
   SDPA is_causal (full layers), SDPA with a boolean sliding-window mask, and compiled
   flex_attention with a sliding-window BlockMask (what train.py uses on CUDA) -- so a GPU session
   can check that flex beats the masked SDPA for the "S" layers.
2. start-up: runs `python train.py` twice with a short budget and a fresh compile cache (cold, then
   warm) and reports the `startup:` line of each.
3. throughput: tok/sec, MFU and peak VRAM from the second (warm) run's summary and progress lines.
4. evaluation: seconds the harness's evaluator (`run_evaluator`) takes to score the warm run's
   weights on the default number of validation tokens (or --eval-tokens).

It does not measure the quality of a run (val_bpb after the full budget): that is what the loop does.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from autoresearch.knobs import set_knobs  # noqa: E402

TINY_KNOBS = {"DEPTH": 2, "ASPECT_RATIO": 32, "HEAD_DIM": 32, "DEVICE_BATCH_SIZE": 4, "TOTAL_BATCH_SIZE": 2**10,
              "EVAL_BATCH_SIZE": 8}


def _time_ms(fn, warmup: int, repeat: int, sync) -> float:
    for _ in range(warmup):
        fn()
    sync()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync()
    return (time.perf_counter() - started) / repeat * 1000


def bench_attention(device: str, tiny: bool) -> None:
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

    window_blocks = create_block_mask(causal_window, None, None, T, T, device=device)
    causal_blocks = create_block_mask(causal, None, None, T, T, device=device)
    compiled_flex = torch.compile(flex_attention, dynamic=False)
    variants = {
        "sdpa_causal": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "sdpa_window_mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask),
        "flex_window": lambda: compiled_flex(q, k, v, block_mask=window_blocks),
        "flex_causal": lambda: compiled_flex(q, k, v, block_mask=causal_blocks),
    }
    if device != "cuda":  # flex has no CPU backward; time the forward only
        variants = {name: fn for name, fn in variants.items() if not name.startswith("flex")}
    print(f"attention_shape: B={B} H={H} T={T} D={D} {dtype} window={window} device={device}")
    for name, forward in variants.items():
        def step(forward=forward):
            out = forward()
            out.backward(grad)
        try:
            ms = _time_ms(step, warmup=3, repeat=10, sync=sync)
            print(f"attention_{name}_fwd_bwd_ms: {ms:.2f}")
        except Exception as error:  # report and go on: one kernel missing must not hide the others
            print(f"attention_{name}_fwd_bwd_ms: failed ({type(error).__name__}: {str(error)[:120]})")


def run_trial(directory: Path, env: dict[str, str], budget: float, label: str, timeout: float) -> str:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "train.py"], cwd=directory, env={**env, "AUTORESEARCH_TIME_BUDGET": str(budget)},
                          capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    (directory / f"{label}.log").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    print(f"{label}_exit_code: {done.returncode}")
    print(f"{label}_wall_seconds: {wall:.1f}")
    startup = re.search(r"^startup: (.*)$", done.stdout, re.MULTILINE)
    print(f"{label}_startup: {startup.group(1) if startup else 'n/a'}")
    if done.returncode != 0:
        print(f"{label}_stderr_tail: {done.stderr.strip().splitlines()[-1:] or ''}")
    return done.stdout


def report_throughput(stdout: str) -> None:
    rates = [int(m.group(1).replace(",", "")) for m in re.finditer(r"tok/sec: ([\d,]+)", stdout)]
    steady = rates[len(rates) // 2 :]  # the second half: compiled, warmed up
    if steady:
        print(f"throughput_tok_per_sec_median: {sorted(steady)[len(steady) // 2]:,}")
    summary = stdout.split("\n---\n", 1)[1] if "\n---\n" in stdout else ""
    for key in ("mfu_percent", "peak_vram_mb", "num_steps", "total_tokens_M", "num_params_M", "training_seconds"):
        match = re.search(rf"^{key}:\s+(\S+)", summary, re.MULTILINE)
        print(f"{key}: {match.group(1) if match else 'n/a'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="a prepared dataset (needed for the training runs)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--budget", type=float, default=30.0, help="training seconds per run (default 30)")
    parser.add_argument("--seq-len", type=int, default=None, help="AUTORESEARCH_MAX_SEQ_LEN (default 2048; tiny: 64)")
    parser.add_argument("--tiny", action="store_true", help="TINY_KNOBS and small shapes: a CPU smoke test")
    parser.add_argument("--attention-only", action="store_true")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per training run before it is killed")
    parser.add_argument("--eval-tokens", type=int, default=None, help="tokens the evaluator scores (default: contract)")
    args = parser.parse_args()

    bench_attention(args.device, args.tiny)
    if args.attention_only:
        return
    if args.data_dir is None:
        parser.error("--data-dir is needed for the training runs (or pass --attention-only)")

    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        directory = Path(scratch)
        source = (REPO_ROOT / "train.py").read_text()
        if args.tiny:
            source = set_knobs(source, TINY_KNOBS)
        (directory / "train.py").write_text(source)
        shutil.copy(REPO_ROOT / "prepare.py", directory / "prepare.py")
        env = {**os.environ, "AUTORESEARCH_DATA_DIR": str(args.data_dir.expanduser().resolve()),
               "AUTORESEARCH_DEVICE": args.device, "AUTORESEARCH_TRAIN_ONLY": "1",
               "AUTORESEARCH_MAX_SEQ_LEN": str(args.seq_len or (64 if args.tiny else 2048)),
               "TORCHINDUCTOR_CACHE_DIR": str(directory / "inductor-cache"),  # starts empty: a cold first run
               "AUTORESEARCH_WEIGHTS_PATH": str(directory / "model.pt")}
        run_trial(directory, env, args.budget, "cold", args.timeout)
        warm = run_trial(directory, env, args.budget, "warm", args.timeout)
        report_throughput(warm)
        bench_evaluator(directory, env, args)


def bench_evaluator(directory: Path, env: dict[str, str], args: argparse.Namespace) -> None:
    from autoresearch.evaluate import run_evaluator

    if not (directory / "model.pt").is_file():
        print("eval_seconds: n/a (the warm run saved no weights)")
        return
    seq_len = int(env["AUTORESEARCH_MAX_SEQ_LEN"])
    started = time.perf_counter()
    result = run_evaluator(directory / "train.py", directory / "model.pt", Path(env["AUTORESEARCH_DATA_DIR"]),
                           tokens=args.eval_tokens, seq_len=seq_len, device=args.device, timeout=args.timeout,
                           log_path=directory / "eval.log")
    print(f"eval_wall_seconds: {time.perf_counter() - started:.1f}")
    print(f"eval_ok: {result.ok} | bpb: {result.bpb} | tokens: {result.tokens:,} | reason: {result.reason}")


if __name__ == "__main__":
    main()
