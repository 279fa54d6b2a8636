"""Time of the harness's evaluator at the demo's settings: `python -m autoresearch.evaluate`, start to verdict.

    python bench/bench_evaluator.py [--repeats 3] [--seq-len 128] [--tokens 32768]
    PYTHONPATH=/path/to/an/older/checkout python bench/bench_evaluator.py   # the same, for that code

What it measures, for the code it imports (the `autoresearch` package on the path, and the
train.py / prepare.py of the same checkout):
  1. prepares the demo's dataset (the built-in sample corpus, vocab 1024) in a temporary cache;
  2. writes train.py with the demo's knobs (autoresearch.demo.DEMO_KNOBS: 2 layers of width 64,
     window pattern SSSL, no compile) beside that checkout's prepare.py, and saves random weights;
  3. runs the evaluator as the loop does, one CPU thread (OMP_NUM_THREADS=1, as the demo), the
     first time with no packed-rows cache (it packs them) and then --repeats times with it;
  4. times, in-process, one forward pass of the model over every scored row (the part the
     attention change touches), best of --repeats; for a checkout with WindowBands also the same
     model with the old (T, T) boolean mask, alternated with it in the same process.
With --attention-only it times just the attention op at the demo's shape and at T = 1024 (with
--compile, also flex_attention under torch.compile, compile time included separately).
It prints one JSON object. Wall times include Python's and torch's start-up; "verdict seconds" is
the evaluator's own clock (from its start to the verdict). No GPU figure comes from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import autoresearch
from autoresearch.data.build import prepare_dataset
from autoresearch.demo import DEMO_DATASET, DEMO_KNOBS, DEMO_VOCAB_SIZE
from autoresearch.knobs import set_knobs

CHECKOUT = Path(autoresearch.__file__).resolve().parents[1]

WEIGHTS_SCRIPT = """
import sys, torch
sys.path.insert(0, sys.argv[1])
import train
torch.manual_seed(1)
model = train.build_model(device="cpu")
with torch.no_grad():
    for parameter in model.parameters():
        parameter.add_(torch.randn_like(parameter) * 0.3)
torch.save(model.state_dict(), sys.argv[2])
"""

FORWARD_SCRIPT = """
import json, sys, time, numpy as np, torch
import torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(1)
from autoresearch import evaluate
import train
rows = evaluate.pack_eval_rows(sys.argv[3], "val", int(sys.argv[4]), int(sys.argv[5]))
model = train.build_model(device="cpu")
model.load_state_dict(torch.load(sys.argv[2], weights_only=True))
model.eval()
x = torch.from_numpy(rows[:, :-1].astype(np.int64))
own_masks = model.attention_masks

def dense_masks(seq_len, device):  # the old path: one SDPA per layer with a (T, T) boolean mask
    i, j = torch.arange(seq_len)[:, None], torch.arange(seq_len)[None, :]
    return [None if w >= seq_len else (j <= i) & (i - j < w) for w in model.window_sizes]

own_attend = train.attend
train.attend = lambda q, k, v, m: (F.scaled_dot_product_attention(q, k, v, attn_mask=m)
                                   if isinstance(m, torch.Tensor) else own_attend(q, k, v, m))
variants = {"checkout": own_masks}
if hasattr(train, "WindowBands"):
    variants["dense_mask_same_process"] = dense_masks
best = {name: float("inf") for name in variants}
with torch.no_grad():
    for _ in range(int(sys.argv[6])):
        for name, masks in variants.items():  # alternated, so that a busy moment hits both
            model.attention_masks = masks
            model(x[:32])
            started = time.perf_counter()
            for lo in range(0, len(x), 32):
                model(x[lo:lo + 32])
            best[name] = min(best[name], time.perf_counter() - started)
print(json.dumps(best))
"""


ATTENTION_SCRIPT = """
import json, sys, time, torch
import torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(1)
import train
from torch.nn.attention.flex_attention import flex_attention
B, H, T, D, repeats, with_compile = (int(value) for value in sys.argv[2:8])
window = T // 2
q, k, v = (torch.randn(B, H, T, D, generator=torch.Generator().manual_seed(seed)) for seed in range(3))
i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
dense = (j <= i) & (i - j < window)
bands = train.sliding_window_bands(T, window, "cpu")
variants = {"dense_mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense),
            "bands": lambda: train.attend(q, k, v, bands)}
result = {}
if with_compile:
    started = time.perf_counter()
    compiled = torch.compile(flex_attention, dynamic=False)
    block_mask = train.sliding_window_block_mask(T, window, "cpu")
    compiled(q, k, v, block_mask=block_mask)
    result["flex_compile_s"] = round(time.perf_counter() - started, 2)
    variants["flex_compiled"] = lambda: compiled(q, k, v, block_mask=block_mask)
best = {name: float("inf") for name in variants}
for _ in range(repeats):
    for name, run in variants.items():
        run()
        started = time.perf_counter()
        run()
        best[name] = min(best[name], time.perf_counter() - started)
result.update({name + "_ms": round(1000 * seconds, 2) for name, seconds in best.items()})
print(json.dumps(result))
"""


def attention_only(shapes: list[tuple[int, int, int, int]], repeats: int, with_compile: bool) -> dict:
    """The attention op alone (B, H, T, D), window T / 2: (T, T)-masked SDPA, bands, compiled flex."""
    found = {}
    for shape in shapes:
        done = subprocess.run([sys.executable, "-c", ATTENTION_SCRIPT, str(CHECKOUT), *map(str, shape), str(repeats),
                               str(int(with_compile))], capture_output=True, text=True, cwd=tempfile.gettempdir())
        if done.returncode != 0:
            raise SystemExit(f"error: the attention timing failed: {done.stderr.strip().splitlines()[-1]}")
        found["x".join(map(str, shape))] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=128)  # autoresearch.demo.DEMO_SEQ_LEN
    parser.add_argument("--tokens", type=int, default=2**15)  # autoresearch.demo.DEMO_EVAL_TOKENS
    parser.add_argument("--attention-only", action="store_true",
                        help="time the attention op alone (needs a checkout with WindowBands)")
    parser.add_argument("--compile", action="store_true", help="with --attention-only: compiled flex_attention too")
    args = parser.parse_args()
    if args.attention_only:
        print(json.dumps(attention_only([(32, 2, args.seq_len, 32), (4, 4, 1024, 64)], args.repeats, args.compile)))
        return

    scratch = Path(tempfile.mkdtemp(prefix="autoresearch-bench-eval-"))
    try:
        env = {**os.environ, "AUTORESEARCH_CACHE_DIR": str(scratch / "cache"), "OMP_NUM_THREADS": "1",
               "AUTORESEARCH_MAX_SEQ_LEN": str(args.seq_len)}
        os.environ["AUTORESEARCH_CACHE_DIR"] = env["AUTORESEARCH_CACHE_DIR"]
        dataset = prepare_dataset("sample", name=DEMO_DATASET, vocab_size=DEMO_VOCAB_SIZE, show_progress=False)
        env["AUTORESEARCH_DATA_DIR"] = str(dataset)
        project = scratch / "project"
        project.mkdir()
        shutil.copy(CHECKOUT / "prepare.py", project / "prepare.py")
        (project / "train.py").write_text(set_knobs((CHECKOUT / "train.py").read_text(), DEMO_KNOBS))
        weights = scratch / "model.pt"
        subprocess.run([sys.executable, "-c", WEIGHTS_SCRIPT, str(project), str(weights)], env=env, check=True, cwd=scratch)

        def evaluate_once() -> tuple[float, dict]:
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "autoresearch.evaluate", "--train-py", str(project / "train.py"),
                                   "--weights", str(weights), "--data-dir", str(dataset), "--seq-len", str(args.seq_len),
                                   "--tokens", str(args.tokens), "--device", "cpu"],
                                  env=env, capture_output=True, text=True, cwd=scratch, check=True)
            wall = time.perf_counter() - started
            return wall, json.loads(done.stdout.strip().splitlines()[-1])

        cold_wall, cold = evaluate_once()
        warm = [evaluate_once() for _ in range(args.repeats)]
        forward = subprocess.run([sys.executable, "-c", FORWARD_SCRIPT, str(project), str(weights), str(dataset),
                                  str(args.seq_len), str(args.tokens), str(args.repeats)],
                                 env=env, capture_output=True, text=True, cwd=scratch)
        if forward.returncode != 0:
            raise SystemExit(f"error: the forward timing failed: {forward.stderr.strip().splitlines()[-1]}")
        print(json.dumps({
            "checkout": str(CHECKOUT),
            "seq_len": args.seq_len, "tokens": args.tokens, "rows": args.tokens // args.seq_len,
            "val_bpb": warm[0][1]["bpb"],
            "first_run_wall_s": round(cold_wall, 3), "first_run_verdict_s": cold["seconds"],
            "warm_wall_s_median": round(statistics.median(wall for wall, _ in warm), 3),
            "warm_verdict_s_median": statistics.median(verdict["seconds"] for _, verdict in warm),
            "forward_all_rows_s_best": {name: round(seconds, 4)
                                        for name, seconds in json.loads(forward.stdout.strip()).items()},
        }))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
