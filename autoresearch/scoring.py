"""The evaluator process: what `python -m autoresearch.evaluate` runs (the loop calls `run_evaluator`).

This process packs (or reads from its cache) the fixed validation rows and the tokens' byte
lengths, THEN imports the trial's train.py as a module named `train` (so its training code under
`if __name__ == "__main__"` never runs), calls `build_model()`, loads the saved weights, and feeds
it the rows. The model only ever sees the input tokens and returns logits; the cross-entropy and
the bits per byte are computed here, with functions captured before train.py was imported. Before
scoring, a causality probe checks that logits at positions < t do not change when the tokens at
positions >= t do. The verdict is one JSON object (`autoresearch.verdict.EvalResult`), printed as
the last line of stdout and written to --json-out.

Checks against a train.py that breaks the measurement, each a `tamper` verdict:
- an audit hook (launch.install_guard), installed once the rows are in memory and before train.py
  is imported, ends the process if anything opens, links or copies the validation or holdout
  files or the packed-rows cache (a model that "predicts" from a memorized copy of the answers);
- the functions the score depends on (torch, numpy, builtins, this module, and the public
  functions of the worktree's prepare.py, imported first) are compared by identity before
  scoring and after, and no torch function or dispatch mode may be left active;
- the rows and byte lengths are hashed before train.py is imported and checked after scoring.

The validation rows are the same for every trial and follow the reference's definition (best-fit
packing of the split's documents, in stored order, from a buffer of 1000; see
`autoresearch.data.evalrows` for the definition and the few documented differences). Their number
is max(1, tokens // seq_len), whatever the batch size. They are cached next to the dataset.

What this does NOT protect against: it runs the agent's code in-process, so a train.py written
to subvert the evaluator can still do so (ctypes, patching objects this module does not check,
undoing a patch before the check, editing memory it can reach through gc). The identity checks
catch accidental or casual monkeypatching; the causality probe catches a model that looks ahead
by mistake (a wrong mask), not one written to pass the probe. The holdout split, scored rarely and
never used for decisions, is the check against overfitting the validation set.
"""

from __future__ import annotations

import argparse
import builtins
import hashlib
import importlib.util
import json
import math
import os
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from autoresearch import contract, launch
from autoresearch.data import evalrows, layout
from autoresearch.data.manifest import check_format
from autoresearch.errors import UserError
from autoresearch.verdict import FAILURE_KINDS, STARTED_MODEL_MARKER, EvalResult

# Captured when the harness imports this module, long before any train.py is imported.
_cross_entropy = F.cross_entropy
_from_numpy = torch.from_numpy
_torch_load = torch.load

PACKING_VERSION = 2  # 2: the reference's best-fit rows (autoresearch.data.evalrows)
PREPARE_FUNCTIONS = ("evaluate_bpb", "make_dataloader", "Tokenizer", "_eval_rows", "_eval_pieces", "_open_split")
__all__ = ["FAILURE_KINDS", "EvalResult", "bits_per_byte", "causality_probe", "main", "pack_eval_rows", "score"]

@dataclass
class BpbResult:
    bpb: float
    loss_nats: float  # mean cross-entropy per scored token
    tokens: int  # targets scored (special tokens excluded)
    bytes: int


@dataclass
class ProbeResult:
    ok: bool
    max_diff: float
    reason: str | None


# --- The fixed validation rows ------------------------------------------------------------------


def default_seq_len() -> int:
    return int(os.environ.get(contract.ENV_MAX_SEQ_LEN) or contract.DEFAULT_MAX_SEQ_LEN)


def default_eval_tokens() -> int:
    return int(os.environ.get(contract.ENV_EVAL_TOKENS) or contract.DEFAULT_EVAL_TOKENS)


def _read_manifest_or_fail(data_dir: Path) -> dict:
    manifest = layout.read_manifest(data_dir)
    if manifest is None:
        raise UserError(f"no prepared dataset at {data_dir} (manifest.json is missing): run `autoresearch prepare`")
    check_format(data_dir, manifest)
    return manifest


def pack_eval_rows(data_dir: Path, split: str, seq_len: int, tokens: int, *, cache: bool = True) -> np.ndarray:
    """(n_rows, seq_len + 1) validation rows, n_rows = max(1, tokens // seq_len), BOS-aligned.

    The reference's rows (`evalrows.pack_rows`): best-fit from a buffer of documents in stored
    order; a split that runs out starts again, as the reference's does. Cached as .npy in the
    dataset directory, keyed by the packing version, the manifest, split, seq_len and tokens.
    """
    data_dir = Path(data_dir)
    if split not in contract.SPLITS:
        raise UserError(f"--split must be one of {', '.join(contract.SPLITS)}, not {split!r}")
    if seq_len < 1 or tokens < 1:
        raise UserError(f"seq_len and tokens must be positive (got seq_len={seq_len}, tokens={tokens})")
    manifest = _read_manifest_or_fail(data_dir)
    fingerprint = hashlib.sha256((data_dir / layout.MANIFEST).read_bytes()).hexdigest()[:12]
    cache_path = data_dir / f"eval-rows-v{PACKING_VERSION}-{fingerprint}-{split}-T{seq_len}-N{tokens}.npy"
    if cache and cache_path.is_file():
        return np.load(cache_path)
    dtype = np.dtype(manifest.get("token_dtype") or layout.token_dtype(int(manifest["vocab_size"])))
    try:
        flat, doc_starts = layout.read_split(data_dir, split, dtype)
    except FileNotFoundError as error:
        raise UserError(f"the dataset at {data_dir} has no {split} split ({error.filename}): prepare it again") from error
    if len(doc_starts) < 2 or np.any(np.diff(doc_starts) < 1) or int(doc_starts[-1]) != len(flat):
        raise UserError(f"the {split} split of {data_dir} is empty or its document index does not match "
                        f"{split}.bin: prepare it again")
    rows = evalrows.pack_rows(flat, doc_starts, evalrows.row_count(tokens, seq_len), seq_len + 1)
    if cache:
        tmp = cache_path.with_name(cache_path.name + f".{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as handle:
                np.save(handle, rows)
            os.replace(tmp, cache_path)
        except OSError:  # a read-only dataset directory: score without the cache
            tmp.unlink(missing_ok=True)
    return rows


# --- Scoring ------------------------------------------------------------------------------------


def _batch(rows: np.ndarray, lo: int, hi: int, device: torch.device) -> torch.Tensor:
    return _from_numpy(np.ascontiguousarray(rows[lo:hi], dtype=np.int64)).to(device)


def _logits_or_fail(logits_fn, x: torch.Tensor, vocab_size: int) -> torch.Tensor:
    logits = logits_fn(x)
    if type(logits) is not torch.Tensor:  # a subclass could override the operations used below
        raise ModelError(f"the model returned {type(logits).__name__}, not a torch.Tensor of logits")
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(x.shape) or logits.size(-1) < vocab_size:
        raise ModelError(f"the model returned logits of shape {tuple(logits.shape)}; expected "
                         f"({x.size(0)}, {x.size(1)}, >= {vocab_size})")
    return logits[..., :vocab_size].float()


class ModelError(Exception):
    """The model misbehaved (wrong output, non-finite loss): a model_error verdict."""


@torch.no_grad()
def bits_per_byte(logits_fn, rows: np.ndarray, token_bytes: np.ndarray, batch_size: int,
                  device: str | torch.device = "cpu") -> BpbResult:
    """Score rows (n, T + 1): inputs rows[:, :-1], targets rows[:, 1:]. logits_fn sees only inputs.

    Sums the natural-log cross-entropy (float64 accumulation) and the raw byte lengths of the
    targets; targets whose byte length is 0 (special tokens) are left out of both sums.
    """
    device = torch.device(device)
    vocab_size = len(token_bytes)
    bytes_table = _from_numpy(np.asarray(token_bytes, dtype=np.int64)).to(device)
    total_nats, total_bytes, total_tokens = 0.0, 0, 0
    for lo in range(0, len(rows), batch_size):
        batch = _batch(rows, lo, lo + batch_size, device)
        x, y = batch[:, :-1], batch[:, 1:].reshape(-1)
        logits = _logits_or_fail(logits_fn, x, vocab_size)
        nats = _cross_entropy(logits.reshape(-1, vocab_size), y, reduction="none")
        target_bytes = bytes_table[y]
        counted = target_bytes > 0
        total_nats += float(nats[counted].cpu().to(torch.float64).sum())
        total_bytes += int(target_bytes.sum())
        total_tokens += int(counted.sum())
    if not math.isfinite(total_nats):
        raise ModelError("the model's logits give a non-finite cross-entropy (NaN or inf logits)")
    if total_bytes == 0:
        raise ModelError("no scored target has any bytes (the rows hold only special tokens)")
    return BpbResult(bpb=total_nats / (math.log(2) * total_bytes), loss_nats=total_nats / total_tokens,
                     tokens=total_tokens, bytes=total_bytes)


@torch.no_grad()
def causality_probe(model, rows: np.ndarray, *, vocab_size: int | None = None, device: str | torch.device = "cpu",
                    positions: tuple[float, ...] = (0.0, 0.5, 1.0), tolerance: float | None = None,
                    seed: int = 0) -> ProbeResult:
    """Do logits at positions < t stay put when the tokens at positions >= t are replaced?

    Uses two rows at once (so looking across the batch is caught too) and cut points t at the
    given fractions of the row (0.0 -> t = 1, 1.0 -> t = T - 1). `tolerance` is on the largest
    absolute logit difference, relative to the largest logit (default: 1e-2 on CUDA, where bf16
    autocast rounds differently, else 1e-4) plus an absolute 1e-3.
    """
    device = torch.device(device)
    x = _batch(rows, 0, min(2, len(rows)), device)[:, :-1]
    T = x.size(1)
    if T < 2:
        return ProbeResult(ok=True, max_diff=0.0, reason=None)
    base = _logits_or_fail(model, x, vocab_size or 1)
    if not bool(torch.isfinite(base).all()):
        raise ModelError("the model returned non-finite logits (NaN or inf)")
    vocab_size = vocab_size or base.size(-1)
    relative = tolerance if tolerance is not None else (1e-2 if device.type == "cuda" else 1e-4)
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for fraction in positions:
        t = min(T - 1, max(1, round(fraction * T)))
        changed = x.clone()
        changed[:, t:] = torch.randint(0, vocab_size, (x.size(0), T - t), generator=generator).to(device)
        logits = _logits_or_fail(model, changed, vocab_size)
        before, after = base[:, :t, :vocab_size], logits[:, :t, :vocab_size]
        diff = float((before - after).abs().max())
        limit = 1e-3 + relative * float(before.abs().max())
        worst = max(worst, diff) if math.isfinite(diff) else math.inf
        if not diff <= limit:
            return ProbeResult(ok=False, max_diff=diff, reason=(
                f"non-causal: logits at positions < t changed when tokens >= t changed "
                f"(max diff {diff:.4g} > tolerance {limit:.3g} at t={t} of {T})"))
    return ProbeResult(ok=True, max_diff=worst, reason=None)


# --- Integrity: what train.py must not replace --------------------------------------------------

_TENSOR_METHODS = ("__getitem__", "__setitem__", "__mul__", "__rmul__", "__add__", "__sub__", "__truediv__",
                   "__gt__", "__ge__", "__le__", "__lt__", "__eq__", "__neg__", "__abs__", "__float__", "__int__",
                   "__bool__", "__format__", "__repr__", "abs", "max", "min", "sum", "float", "double", "long", "to",
                   "cpu", "item", "reshape", "view", "size", "dim", "clone", "contiguous", "mean", "exp")


def _watched() -> list[tuple[str, object, str]]:
    """(label, owner, attribute) of every function the score depends on."""
    this = sys.modules[__name__]
    watched = [("torch.nn.functional." + name, F, name) for name in ("cross_entropy", "log_softmax", "nll_loss")]
    watched += [("torch." + name, torch, name) for name in
                ("load", "from_numpy", "log_softmax", "no_grad", "autocast", "randint", "isfinite", "stack", "cat")]
    watched += [("torch.Tensor." + name, torch.Tensor, name) for name in _TENSOR_METHODS]
    watched += [("torch.nn.Module." + name, torch.nn.Module, name) for name in
                ("__call__", "load_state_dict", "eval", "to", "parameters")]
    watched += [("numpy." + name, np, name) for name in ("asarray", "ascontiguousarray", "load", "save")]
    watched += [("builtins." + name, builtins, name) for name in
                ("float", "int", "sum", "len", "min", "max", "abs", "round", "isinstance", "type", "print", "open")]
    watched += [("math." + name, math, name) for name in ("log", "isfinite")]
    watched += [("json.dumps", json, "dumps")]
    watched += [(f"{__name__}.{name}", this, name) for name in
                ("bits_per_byte", "causality_probe", "_logits_or_fail", "_batch", "_cross_entropy", "_from_numpy",
                 "_torch_load", "_verdict", "_check_integrity", "_finish", "_digest")]
    watched += [("hashlib.sha256", hashlib, "sha256")]
    prepare = sys.modules.get("prepare")  # the worktree's prepare.py, once imported (see score)
    if prepare is not None:
        watched += [("prepare." + name, prepare, name) for name in PREPARE_FUNCTIONS if hasattr(prepare, name)]
    return watched


def snapshot_functions() -> dict[str, object]:
    return {label: getattr(owner, name, None) for label, owner, name in _watched()}


def _check_integrity(snapshot: dict[str, object]) -> str | None:
    """A 'tamper: ...' reason if a watched function was replaced or a torch mode is active."""
    current = snapshot_functions()
    replaced = [label for label, original in snapshot.items() if current.get(label) is not original]
    if replaced:
        return f"tamper: train.py replaced {', '.join(replaced)}"
    if torch._C._len_torch_function_stack() > 0 or torch._C._len_torch_dispatch_stack() > 0:
        return "tamper: train.py left a torch function or dispatch mode active (it would intercept the scoring)"
    return None


# --- The evaluator process ----------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device must be auto, cpu, cuda or mps, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def _import_module(name: str, path: Path):
    """Import `path` as module `name`, its directory first on sys.path (for `import prepare`)."""
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    sys.modules.pop(name, None)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _digest(*arrays: np.ndarray) -> str:
    """sha256 over arrays' bytes: the rows and byte lengths must be the same after scoring."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _verdict(split: str, *, ok: bool = False, bpb: BpbResult | None = None, causal_ok: bool | None = None,
             failure_kind: str | None = None, reason: str | None = None, started: float) -> EvalResult:
    return EvalResult(ok=ok, split=split, bpb=bpb.bpb if bpb else None, loss_nats=bpb.loss_nats if bpb else None,
                      tokens=bpb.tokens if bpb else 0, bytes=bpb.bytes if bpb else 0, causal_ok=causal_ok,
                      failure_kind=failure_kind, reason=reason, seconds=round(time.perf_counter() - started, 3))


def _short(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text if len(text) <= 500 else text[:497] + "..."


def score(train_py: Path, weights: Path, rows: np.ndarray, token_bytes: np.ndarray, *, split: str,
          device: torch.device, batch_size: int | None, started: float) -> EvalResult:
    """Import, build, load, probe, score; every failure past this point is the model's."""
    rows.setflags(write=False)
    token_bytes = np.array(token_bytes)  # a private, read-only copy
    token_bytes.setflags(write=False)
    rows_digest = _digest(rows, token_bytes)
    print(STARTED_MODEL_MARKER, flush=True)
    snapshot = snapshot_functions()
    try:
        prepare_py = train_py.parent / "prepare.py"
        sys.modules.pop("prepare", None)
        if prepare_py.is_file():
            _import_module("prepare", prepare_py)
            snapshot = snapshot_functions()  # prepare.py's functions too, before train.py runs
        train = _import_module("train", train_py)
        build_model = getattr(train, "build_model", None)
        if not callable(build_model):
            raise ModelError("train.py defines no build_model() function")
        torch.manual_seed(0)
        model = build_model(device=device)
        if not isinstance(model, torch.nn.Module):
            raise ModelError(f"build_model() returned {type(model).__name__}, not a torch.nn.Module")
    except BaseException as error:  # SystemExit and KeyboardInterrupt from train.py included
        traceback.print_exc()
        reason = str(error) if isinstance(error, ModelError) else f"importing train.py / build_model() failed: {_short(error)}"
        return _verdict(split, failure_kind="model_error", reason=reason, started=started)

    try:
        state = _torch_load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        model.to(device)
        model.eval()
    except BaseException as error:
        traceback.print_exc()
        return _verdict(split, failure_kind="weights_error",
                        reason=f"loading {weights} into build_model() failed: {_short(error)}", started=started)

    tampered = _check_integrity(snapshot)
    if tampered:
        return _verdict(split, failure_kind="tamper", reason=tampered, started=started)

    if batch_size is None:
        knob = getattr(train, "EVAL_BATCH_SIZE", None)
        batch_size = knob if isinstance(knob, int) and knob > 0 else (32 if device.type == "cuda" else 8)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    vocab_size = len(token_bytes)
    try:
        with autocast:
            probe = causality_probe(model, rows, vocab_size=vocab_size, device=device)
            if not probe.ok:
                return _verdict(split, causal_ok=False, failure_kind="causality", reason=probe.reason, started=started)
            result = bits_per_byte(model, rows, token_bytes, batch_size, device)
    except BaseException as error:
        traceback.print_exc()
        reason = str(error) if isinstance(error, ModelError) else f"the model failed while scoring: {_short(error)}"
        return _verdict(split, causal_ok=None, failure_kind="model_error", reason=reason, started=started)

    tampered = _check_integrity(snapshot)
    if tampered is None and _digest(rows, token_bytes) != rows_digest:
        tampered = "tamper: the validation rows or byte lengths changed while the model was scored"
    if tampered:
        return _verdict(split, causal_ok=True, failure_kind="tamper", reason=tampered, started=started)
    return _verdict(split, ok=True, bpb=result, causal_ok=True, started=started)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autoresearch.evaluate",
                                     description="Score a trained train.py model: bits per byte on fixed tokens.")
    parser.add_argument("--train-py", type=Path, required=True)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--split", default="val", choices=["val", "holdout"])
    parser.add_argument("--tokens", type=int, default=None, help="tokens scored (default $AUTORESEARCH_EVAL_TOKENS)")
    parser.add_argument("--seq-len", type=int, default=None, help="row length (default $AUTORESEARCH_MAX_SEQ_LEN)")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per forward (default: EVAL_BATCH_SIZE)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--json-out", type=Path, default=None)
    return parser


def _finish(result: EvalResult, json_out: Path | None) -> None:
    text = json.dumps(result.to_dict())
    if json_out is not None:
        tmp = json_out.with_name(json_out.name + ".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, json_out)
    print(text, flush=True)


def _guard_split_files(data_dir: Path, split: str, json_out: Path | None, started: float) -> None:
    """From here on, opening the val/holdout files or the rows cache ends this process with a tamper verdict.

    The rows are already in memory; nothing the harness does after this point reads those files.
    """
    protected = [str(data_dir / f"{name}{suffix}") for name in ("val", "holdout") for suffix in (".bin", ".docs.npy")]
    protected.append(str(data_dir / "eval-rows-*"))

    def on_violation(line: str) -> None:
        _finish(_verdict(split, failure_kind="tamper", reason=line, started=started), json_out)

    launch.install_guard(protected, message="tamper: train.py opened validation data while being scored:",
                         on_violation=on_violation)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = _parser().parse_args(argv)
    try:
        seq_len = args.seq_len or default_seq_len()
        tokens = args.tokens or default_eval_tokens()
        if args.batch_size is not None and args.batch_size < 1:
            raise UserError("--batch-size must be positive")
        train_py = args.train_py.resolve()
        if not train_py.is_file():
            raise UserError(f"--train-py {train_py} does not exist")
        data_dir = args.data_dir.expanduser().resolve()
        device = resolve_device(args.device)
        rows = pack_eval_rows(data_dir, args.split, seq_len, tokens)
        token_bytes = layout.read_token_bytes(data_dir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    launch.apply_sandbox()  # the rows are in memory: from here on, no dataset file is readable
    # train.py's prepare.py must see the same dataset, context length and rules as the harness.
    os.environ[contract.ENV_DATA_DIR] = str(data_dir)
    os.environ[contract.ENV_MAX_SEQ_LEN] = str(seq_len)
    os.environ[contract.ENV_TRAIN_ONLY] = "1"
    os.environ[contract.ENV_DEVICE] = device.type
    print(f"evaluating {train_py} with {args.weights} on {args.split}: {rows.shape[0]} rows x {seq_len} tokens "
          f"on {device}", flush=True)
    _guard_split_files(data_dir, args.split, args.json_out, started)
    result = score(train_py, args.weights.expanduser().resolve(), rows, token_bytes, split=args.split,
                   device=device, batch_size=args.batch_size, started=started)
    _finish(result, args.json_out)
    return 0


# --- The loop's side: run the evaluator in a subprocess -----------------------------------------
