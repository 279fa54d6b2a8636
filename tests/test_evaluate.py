"""The harness's evaluator: fixed rows, bits per byte against an independent computation, the
causality probe, tamper detection, and `run_evaluator` verdicts from a real subprocess."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from autoresearch import evaluate
from autoresearch.data import layout
from autoresearch.errors import UserError

SEQ_LEN = 32


class Bigram(nn.Module):
    """Causal: the logits at position t depend on token t only."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)
        with torch.no_grad():
            self.table.weight.copy_(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)) * 2)

    def forward(self, idx):
        return self.table(idx)


class PeeksAhead(Bigram):
    """Non-causal: position t also sees the mean of every token's row, future ones included."""

    def forward(self, idx):
        rows = self.table(idx)
        return rows + rows.mean(dim=1, keepdim=True)


class Unigram(nn.Module):
    """Ignores its input: the same log-probabilities everywhere."""

    def __init__(self, log_probs: torch.Tensor):
        super().__init__()
        self.log_probs = log_probs

    def forward(self, idx):
        return self.log_probs.expand(idx.size(0), idx.size(1), -1).clone()


@pytest.fixture(scope="module")
def rows(tiny_dataset) -> np.ndarray:
    return evaluate.pack_eval_rows(tiny_dataset, "val", SEQ_LEN, 1024)


@pytest.fixture(scope="module")
def token_bytes(tiny_dataset) -> np.ndarray:
    return layout.read_token_bytes(tiny_dataset)


# --- packing ------------------------------------------------------------------------------------


def test_rows_are_bos_aligned_best_fit_pieces_of_the_split(tiny_dataset, rows):
    """The full definition is cross-checked in test_scoring_reference.py; here, its visible properties."""
    manifest = layout.read_manifest(tiny_dataset)
    flat, starts = layout.read_split(tiny_dataset, "val", manifest["token_dtype"])
    assert rows.shape == (1024 // SEQ_LEN, SEQ_LEN + 1)
    assert (rows[:, 0] == manifest["bos_id"]).all()
    docs = {tuple(np.asarray(flat[a:b]).tolist()) for a, b in zip(starts[:-1], starts[1:])}
    for row in rows.tolist():  # every BOS starts a piece that is a document's prefix
        bos_at = [i for i, token in enumerate(row) if token == manifest["bos_id"]] + [len(row)]
        for a, b in zip(bos_at[:-1], bos_at[1:]):
            assert any(doc[: b - a] == tuple(row[a:b]) for doc in docs)


def test_rows_are_cached_and_identical_on_reload(tiny_dataset, rows):
    cached = list(tiny_dataset.glob(f"eval-rows-v*-val-T{SEQ_LEN}-N1024.npy"))
    assert len(cached) == 1
    again = evaluate.pack_eval_rows(tiny_dataset, "val", SEQ_LEN, 1024)
    fresh = evaluate.pack_eval_rows(tiny_dataset, "val", SEQ_LEN, 1024, cache=False)
    assert np.array_equal(again, rows) and np.array_equal(fresh, rows)


def test_a_split_that_runs_out_starts_again_and_a_missing_dataset_is_a_user_error(tiny_dataset, tmp_path):
    n_tokens = layout.read_manifest(tiny_dataset)["splits"]["val"]["tokens"]
    rows = evaluate.pack_eval_rows(tiny_dataset, "val", SEQ_LEN, 4 * n_tokens, cache=False)
    assert len(rows) == 4 * n_tokens // SEQ_LEN  # the reference repeats the split: the row count holds
    with pytest.raises(UserError, match="no prepared dataset"):
        evaluate.pack_eval_rows(tmp_path, "val", SEQ_LEN, 100)


def test_a_dataset_of_the_old_format_is_refused_with_the_command_that_rebuilds_it(tiny_dataset, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_dataset, old, ignore=shutil.ignore_patterns("eval-rows-*"))
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 1
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"has format 1, this version reads 2 .*autoresearch prepare .*--force"):
        evaluate.pack_eval_rows(old, "val", SEQ_LEN, 1024)
    completed = subprocess.run([sys.executable, "-m", "autoresearch.evaluate", "--train-py", __file__,
                                "--weights", str(tmp_path / "none.pt"), "--data-dir", str(old), "--device", "cpu"],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert completed.stderr.strip().count("\n") == 0 and completed.stderr.startswith("error: dataset ")


# --- bits per byte ------------------------------------------------------------------------------


def _independent_bpb(logits: np.ndarray, targets: np.ndarray, token_bytes: np.ndarray) -> float:
    """float64 log-softmax by hand, special tokens (0 bytes) excluded from both sums."""
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_z = top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))
    nats = log_z - np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nbytes = token_bytes[targets]
    return float((nats * (nbytes > 0)).sum() / (math.log(2) * nbytes.sum()))


def test_bits_per_byte_matches_an_independent_float64_computation(rows, token_bytes):
    model = Bigram(len(token_bytes))
    result = evaluate.bits_per_byte(model, rows, token_bytes, batch_size=5)
    with torch.no_grad():
        logits = model(torch.from_numpy(rows[:, :-1].astype(np.int64))).numpy()
    expected = _independent_bpb(logits, rows[:, 1:].astype(np.int64), token_bytes)
    assert result.bpb == pytest.approx(expected, rel=1e-6)
    targets = rows[:, 1:]
    assert result.bytes == int(token_bytes[targets].sum())
    assert result.tokens == int((token_bytes[targets] > 0).sum())


def test_special_token_targets_count_neither_nats_nor_bytes(tiny_dataset, token_bytes):
    rows = evaluate.pack_eval_rows(tiny_dataset, "val", 256, 256 * 4, cache=False)  # several documents a row
    targets = rows[:, 1:]
    assert (token_bytes[targets] == 0).any()  # BOS targets are there
    model = Bigram(len(token_bytes))
    result = evaluate.bits_per_byte(model, rows, token_bytes, batch_size=3)
    with torch.no_grad():
        logits = model(torch.from_numpy(rows[:, :-1].astype(np.int64))).numpy()
    assert result.tokens == int((token_bytes[targets] > 0).sum()) < targets.size
    assert result.bpb == pytest.approx(_independent_bpb(logits, targets.astype(np.int64), token_bytes), rel=1e-6)


def test_a_model_ignoring_its_input_scores_the_unigram_entropy(rows, token_bytes):
    targets = rows[:, 1:].reshape(-1).astype(np.int64)
    scored = targets[token_bytes[targets] > 0]
    counts = np.bincount(scored, minlength=len(token_bytes)).astype(np.float64)
    probs = counts / counts.sum()
    log_probs = torch.full((len(token_bytes),), -1e9)
    log_probs[probs > 0] = torch.from_numpy(np.log(probs[probs > 0])).float()
    result = evaluate.bits_per_byte(Unigram(log_probs), rows, token_bytes, batch_size=8)
    entropy_nats = -(probs[probs > 0] * np.log(probs[probs > 0])).sum()
    assert result.loss_nats == pytest.approx(entropy_nats, rel=1e-5)
    assert result.bpb == pytest.approx(entropy_nats * len(scored) / (math.log(2) * token_bytes[scored].sum()), rel=1e-5)


def test_wrong_logit_shapes_and_subclasses_are_model_errors(rows, token_bytes):
    with pytest.raises(evaluate.ModelError, match="shape"):
        evaluate.bits_per_byte(lambda x: torch.zeros(x.size(0), x.size(1), 3), rows, token_bytes, 4)

    class Sneaky(torch.Tensor):
        pass

    with pytest.raises(evaluate.ModelError, match="Sneaky"):
        evaluate.bits_per_byte(lambda x: torch.zeros(*x.shape, len(token_bytes)).as_subclass(Sneaky),
                               rows, token_bytes, 4)
    with pytest.raises(evaluate.ModelError, match="non-finite"):
        evaluate.bits_per_byte(lambda x: torch.full((*x.shape, len(token_bytes)), float("nan")), rows, token_bytes, 4)


# --- causality ----------------------------------------------------------------------------------


def test_the_probe_passes_a_causal_model_and_fails_one_that_looks_ahead(rows, token_bytes):
    vocab = len(token_bytes)
    assert evaluate.causality_probe(Bigram(vocab), rows, vocab_size=vocab).ok
    verdict = evaluate.causality_probe(PeeksAhead(vocab), rows, vocab_size=vocab)
    assert not verdict.ok
    assert verdict.reason.startswith("non-causal: logits at positions < t changed when tokens >= t changed (max diff")


def test_the_probe_catches_a_one_token_look_ahead(rows, token_bytes):
    class NextToken(Bigram):
        def forward(self, idx):
            return self.table(torch.roll(idx, -1, dims=1))  # position t sees token t + 1

    assert not evaluate.causality_probe(NextToken(len(token_bytes)), rows, vocab_size=len(token_bytes)).ok


def test_the_probe_catches_looking_across_the_batch(rows, token_bytes):
    class BatchMixer(Bigram):
        def forward(self, idx):
            logits = self.table(idx)
            return logits + logits.flip(0).mean(dim=1, keepdim=True)  # row 0 sees all of row 1

    assert not evaluate.causality_probe(BatchMixer(len(token_bytes)), rows, vocab_size=len(token_bytes)).ok


# --- the evaluator process ----------------------------------------------------------------------

TOY_TRAIN_PY = """
import time
import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = {vocab}
EVAL_BATCH_SIZE = 4


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(VOCAB, VOCAB)

    def forward(self, idx):
        logits = self.table(idx)
        {forward_extra}
        return logits


def build_model(device=None):
    {build_extra}
    return Model().to(device or "cpu")

{module_extra}

if __name__ == "__main__":
    raise SystemExit("training must not run under the evaluator")
"""


def _toy(tmp_path: Path, vocab: int, *, forward_extra: str = "", build_extra: str = "", module_extra: str = "",
         weights_vocab: int | None = None) -> tuple[Path, Path]:
    train_py = tmp_path / "train.py"
    train_py.write_text(TOY_TRAIN_PY.format(vocab=vocab, forward_extra=forward_extra or "pass",
                                            build_extra=build_extra or "pass", module_extra=module_extra))
    weights = tmp_path / "model.pt"
    n = weights_vocab or vocab
    torch.manual_seed(0)
    torch.save({"table.weight": torch.randn(n, n)}, weights)
    return train_py, weights


def _run(tmp_path, tiny_dataset, train_py, weights, **kwargs) -> evaluate.EvalResult:
    options = dict(seq_len=SEQ_LEN, tokens=512, device="cpu", timeout=120, log_path=tmp_path / "eval.log")
    options.update(kwargs)
    return evaluate.run_evaluator(train_py, weights, tiny_dataset, **options)


@pytest.mark.slow
def test_run_evaluator_scores_a_causal_toy_model(tmp_path, tiny_dataset, token_bytes):
    vocab = len(token_bytes)
    train_py, weights = _toy(tmp_path, vocab)
    result = _run(tmp_path, tiny_dataset, train_py, weights)
    assert result.ok and result.causal_ok and result.failure_kind is None, result.reason
    model = Bigram(vocab)
    model.table.weight.data.copy_(torch.load(weights)["table.weight"])
    packed = evaluate.pack_eval_rows(tiny_dataset, "val", SEQ_LEN, 512)
    assert result.bpb == pytest.approx(evaluate.bits_per_byte(model, packed, token_bytes, 4).bpb, rel=1e-9)
    # the verdict is also the last line of the log
    assert json.loads((tmp_path / "eval.log").read_text().strip().splitlines()[-1])["bpb"] == result.bpb


@pytest.mark.slow
@pytest.mark.parametrize("case, expected_kind, reason_start", [
    ("tamper", "tamper", "tamper: train.py replaced torch.nn.functional.cross_entropy"),
    ("tensor_tamper", "tamper", "tamper: train.py replaced torch.Tensor.sum"),
    ("noncausal", "causality", "non-causal: logits at positions < t changed"),
    ("wrong_weights", "weights_error", "loading"),
    ("import_fails", "model_error", "importing train.py / build_model() failed: ZeroDivisionError"),
])
def test_run_evaluator_verdicts(tmp_path, tiny_dataset, token_bytes, case, expected_kind, reason_start):
    vocab = len(token_bytes)
    extras = {
        "tamper": dict(module_extra="F.cross_entropy = lambda *args, **kwargs: torch.zeros(())"),
        "tensor_tamper": dict(module_extra="torch.Tensor.sum = lambda self, *a, **k: torch.zeros(())"),
        "noncausal": dict(forward_extra="logits = logits + logits.mean(dim=1, keepdim=True)"),
        "wrong_weights": dict(weights_vocab=vocab + 1),
        "import_fails": dict(module_extra="1 / 0"),
    }[case]
    train_py, weights = _toy(tmp_path, vocab, **extras)
    result = _run(tmp_path, tiny_dataset, train_py, weights)
    assert not result.ok and result.bpb is None
    assert result.failure_kind == expected_kind
    assert result.reason.startswith(reason_start), result.reason


@pytest.mark.slow
def test_run_evaluator_kills_a_model_that_hangs(tmp_path, tiny_dataset, token_bytes):
    train_py, weights = _toy(tmp_path, len(token_bytes), build_extra="time.sleep(120)")
    result = _run(tmp_path, tiny_dataset, train_py, weights, timeout=3)
    assert result.failure_kind == "timeout" and not result.ok
    assert result.seconds < 30


@pytest.mark.slow
def test_a_process_that_dies_after_import_is_the_models_fault(tmp_path, tiny_dataset, token_bytes):
    train_py, weights = _toy(tmp_path, len(token_bytes), module_extra="import os\nos._exit(3)")
    result = _run(tmp_path, tiny_dataset, train_py, weights)
    assert result.failure_kind == "model_error" and "exit code 3" in result.reason


@pytest.mark.slow
def test_harness_side_problems_raise_user_errors(tmp_path, tiny_dataset, token_bytes):
    train_py, weights = _toy(tmp_path, len(token_bytes))
    with pytest.raises(UserError, match="no prepared dataset"):
        _run(tmp_path, tmp_path / "nowhere", train_py, weights)


def test_cli_reports_bad_arguments_with_exit_code_2(tmp_path, tiny_dataset, capsys):
    code = evaluate.main(["--train-py", str(tmp_path / "missing.py"), "--weights", "w.pt",
                          "--data-dir", str(tiny_dataset)])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_integrity_check_sees_a_replaced_function_and_an_active_mode(monkeypatch):
    snapshot = evaluate.snapshot_functions()
    assert evaluate._check_integrity(snapshot) is None
    monkeypatch.setattr(torch.nn.functional, "log_softmax", lambda *a, **k: None)
    assert evaluate._check_integrity(snapshot) == "tamper: train.py replaced torch.nn.functional.log_softmax"
    monkeypatch.undo()
    from torch.overrides import TorchFunctionMode

    with TorchFunctionMode():
        assert "mode active" in evaluate._check_integrity(snapshot)
    assert evaluate._check_integrity(snapshot) is None


def test_run_evaluator_is_importable_without_torch() -> None:
    code = ("import sys; from autoresearch.evaluate import EvalResult, run_evaluator; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_run_evaluator_kills_its_process_group_when_interrupted(tmp_path, tiny_dataset, token_bytes):
    train_py, weights = _toy(tmp_path, len(token_bytes), build_extra="time.sleep(120)")

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 3.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(tmp_path, tiny_dataset, train_py, weights, timeout=60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert _processes_naming(str(train_py)) == []


def test_the_score_does_not_depend_on_the_batch_size(tiny_dataset, token_bytes):
    """The rows are packed once, then cut into batches: any batch size scores the same tokens."""
    rows = evaluate.pack_eval_rows(tiny_dataset, "val", SEQ_LEN, 1000, cache=False)  # 31 rows: no size divides it
    model = Bigram(len(token_bytes))
    scores = {size: evaluate.bits_per_byte(model, rows, token_bytes, size) for size in (1, 4, 7, 31, 64)}
    assert len({(score.tokens, score.bytes) for score in scores.values()}) == 1
    assert max(score.bpb for score in scores.values()) - min(score.bpb for score in scores.values()) < 1e-12
