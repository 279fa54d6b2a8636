"""Cross-check: the harness's val_bpb against a plain, independent reading of the reference's definitions.

The reference is karpathy/autoresearch's prepare.py. Its scoring is three definitions, written
out here again in the plainest Python, without any code of the harness:

- rows: `reference_rows`, the reference's best-fit loop over a buffer of token lists (a linear
  scan, lists popped and extended), documents read in chunks of 128, the split repeated;
- bytes: `reference_token_bytes`, len(decode([id]).encode("utf-8")) from tiktoken, 0 for the
  special tokens;
- nats -> bits: float64 log-softmax by hand, targets with 0 bytes left out of both sums, one ln 2.

They must give the evaluator's number to 1e-6 on a small GPT (the real train.py, shrunk) on the
tiny dataset and on the docs corpus prepared as climbmix shards (skipped when that corpus is not
on this machine). The evaluator runs as the harness runs it: `python -m autoresearch.evaluate`.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, SHARED_DATA

from autoresearch.data import evalrows, layout
from autoresearch.knobs import set_knobs

DOCS_CORPUS = Path(os.environ.get("AUTORESEARCH_SHARED_DATA", SHARED_DATA)) / "docs-corpus"
SMALL_GPT = {"DEPTH": 2, "ASPECT_RATIO": 32, "HEAD_DIM": 32, "COMPILE": False, "EVAL_BATCH_SIZE": 8}


# --- the reference's definitions, written out plainly -------------------------------------------


def read_documents(dataset: Path, split: str) -> list[list[int]]:
    manifest = json.loads((dataset / "manifest.json").read_text())
    flat = np.fromfile(dataset / f"{split}.bin", dtype=manifest["token_dtype"]).tolist()
    starts = np.load(dataset / f"{split}.docs.npy").tolist()
    return [flat[start:end] for start, end in zip(starts[:-1], starts[1:])]


def reference_rows(documents: list[list[int]], batch_size: int, seq_len: int, eval_tokens: int,
                   buffer_size: int = 1000, chunk: int = 128) -> list[list[int]]:
    """The rows the reference's evaluate_bpb scores: steps * batch_size rows of seq_len + 1 tokens."""
    def chunks():
        while True:  # the split again and again (epochs)
            for first in range(0, len(documents), chunk):
                yield documents[first : first + chunk]

    source = chunks()
    buffer: list[list[int]] = []
    rows = []
    steps = eval_tokens // (batch_size * seq_len)
    for _ in range(steps * batch_size):
        row: list[int] = []
        while len(row) < seq_len + 1:
            while len(buffer) < buffer_size:
                buffer.extend(list(doc) for doc in next(source))
            remaining = seq_len + 1 - len(row)
            best, best_len = -1, 0
            for index, doc in enumerate(buffer):
                if best_len < len(doc) <= remaining:
                    best, best_len = index, len(doc)
            if best >= 0:
                row.extend(buffer.pop(best))
            else:
                shortest = min(range(len(buffer)), key=lambda index: len(buffer[index]))
                row.extend(buffer.pop(shortest)[:remaining])
        rows.append(row)
    return rows


def reference_token_bytes(dataset: Path) -> list[int]:
    import tiktoken

    payload = json.loads((dataset / "tokenizer.json").read_text())
    ranks = {base64.b64decode(token): rank for rank, token in enumerate(payload["ranks"])}
    specials = {name: int(i) for name, i in payload["special_tokens"].items()}
    encoding = tiktoken.Encoding(name="check", pat_str=payload["pattern"], mergeable_ranks=ranks,
                                 special_tokens=specials)
    counts = []
    for token_id in range(encoding.n_vocab):
        text = encoding.decode([token_id])
        counts.append(0 if text in specials else len(text.encode("utf-8")))
    return counts


def reference_bpb(logits: np.ndarray, targets: np.ndarray, token_bytes: list[int]) -> float:
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_z = top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))
    nats = log_z - np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    counts = np.array(token_bytes, dtype=np.int64)[targets]
    return float(nats[counts > 0].sum() / (math.log(2) * counts.sum()))


# --- the pieces, one by one ---------------------------------------------------------------------


def test_packing_by_hand_with_a_small_buffer() -> None:
    # lengths 5 3 8 2 4, rows of 6, buffer of 3 refilled 2 documents at a time (worked out on paper):
    # row 1: doc 0 whole (5), nothing fits 1 -> doc 3 (the shortest) cropped to 1;
    # row 2: doc 4 arrives, whole (4); docs 0, 1 arrive again (epoch 2); nothing fits 2 -> the
    #        shortest are the two doc 1s (3), the first buffered goes, cropped to 2;
    # row 3: doc 0 of epoch 2 (5); docs 2, 3 arrive again; doc 3 cropped to 1.
    docs, takes = evalrows.choose_pieces(np.array([5, 3, 8, 2, 4]), 3, 6, buffer_documents=3, refill_documents=2)
    assert docs.tolist() == [0, 3, 4, 1, 0, 3]
    assert takes.tolist() == [5, 1, 4, 2, 5, 1]


def test_rows_are_the_reference_rows_and_prepare_py_agrees(tiny_dataset: Path) -> None:
    from autoresearch import scoring

    documents = read_documents(tiny_dataset, "val")
    assert len(documents) < 1000  # the buffer holds the split many times over: epochs are exercised
    expected = reference_rows(documents, batch_size=4, seq_len=32, eval_tokens=32 * 48)
    rows = scoring.pack_eval_rows(tiny_dataset, "val", 32, 32 * 48, cache=False)
    assert rows.tolist() == expected
    prepare = load_module("prepare_under_test", REPO_ROOT / "prepare.py", tiny_dataset, seq_len=32)
    assert prepare._eval_rows(tiny_dataset, "val", 32, 32 * 48).tolist() == expected


def test_token_bytes_are_the_utf8_of_each_decoded_token(tiny_dataset: Path) -> None:
    assert layout.read_token_bytes(tiny_dataset).tolist() == reference_token_bytes(tiny_dataset)
    assert layout.decoded_byte_length("你".encode()) == 3
    assert layout.decoded_byte_length("你".encode()[:2]) == 3  # one U+FFFD for the fragment, not 2 raw bytes
    assert layout.decoded_byte_length(b"\xa0\xa0") == 6  # two stray continuation bytes: two U+FFFD


def test_the_tokenizer_has_the_reference_special_tokens(tiny_dataset: Path) -> None:
    spec = layout.read_tokenizer(tiny_dataset)
    n = len(spec.ranks)
    assert spec.special_tokens == {"<|reserved_0|>": n, "<|reserved_1|>": n + 1, "<|reserved_2|>": n + 2,
                                   "<|reserved_3|>": n + 3}
    assert spec.bos_id == n


# --- the whole evaluator against the definitions ------------------------------------------------


def load_module(name: str, path: Path, dataset: Path, seq_len: int):
    """Import a train.py / prepare.py with the harness's environment (its constants are read at import)."""
    saved = {key: os.environ.get(key) for key in ("AUTORESEARCH_DATA_DIR", "AUTORESEARCH_MAX_SEQ_LEN")}
    saved_prepare = sys.modules.pop("prepare", None)
    os.environ.update(AUTORESEARCH_DATA_DIR=str(dataset), AUTORESEARCH_MAX_SEQ_LEN=str(seq_len))
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))
        sys.modules.pop("prepare", None)
        if saved_prepare is not None:
            sys.modules["prepare"] = saved_prepare
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def small_gpt_project(root: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "prepare.py", root / "prepare.py")
    (root / "train.py").write_text(set_knobs((REPO_ROOT / "train.py").read_text(), SMALL_GPT))
    return root / "train.py"


def random_weights(train, path: Path) -> None:
    """The small GPT with every weight random (a fresh init zeroes the projections: too easy)."""
    torch.manual_seed(1)
    model = train.build_model(device="cpu")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    torch.save(model.state_dict(), path)


def cross_check(dataset: Path, tmp_path: Path, seq_len: int, eval_tokens: int, batch_size: int) -> tuple[float, float]:
    train_py = small_gpt_project(tmp_path / "project")
    train = load_module("train_under_test", train_py, dataset, seq_len)
    weights = tmp_path / "model.pt"
    random_weights(train, weights)
    verdict_path = tmp_path / "verdict.json"
    completed = subprocess.run(
        [sys.executable, "-m", "autoresearch.evaluate", "--train-py", str(train_py), "--weights", str(weights),
         "--data-dir", str(dataset), "--seq-len", str(seq_len), "--tokens", str(eval_tokens),
         "--batch-size", str(batch_size), "--device", "cpu", "--json-out", str(verdict_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    verdict = json.loads(verdict_path.read_text())
    assert verdict["ok"], verdict

    rows = np.array(reference_rows(read_documents(dataset, "val"), batch_size, seq_len, eval_tokens), dtype=np.int64)
    model = train.build_model(device="cpu")
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    with torch.no_grad():
        logits = np.concatenate([model(torch.from_numpy(rows[i : i + 4, :-1])).numpy() for i in range(0, len(rows), 4)])
    token_bytes = reference_token_bytes(dataset)
    assert verdict["bytes"] == int(np.array(token_bytes)[rows[:, 1:]].sum())
    return verdict["bpb"], reference_bpb(logits, rows[:, 1:], token_bytes)


def test_the_evaluator_gives_the_reference_number_on_a_small_gpt(tiny_dataset: Path, tmp_path: Path) -> None:
    ours, reference = cross_check(tiny_dataset, tmp_path, seq_len=64, eval_tokens=64 * 24, batch_size=8)
    assert ours == pytest.approx(reference, rel=1e-6)
    assert 1.0 < reference < 20.0  # random weights: far from a trained model, far from degenerate


@pytest.fixture(scope="module")
def docs_climbmix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs corpus prepared through the climbmix code path: shard files, the last one pinned as val.

    Kept small: train is train_002 (81 documents), holdout the first 40 documents of train_001
    (written to a temporary parquet), val the corpus's real val_000 (425 documents, 3.9 M characters).
    """
    if not (DOCS_CORPUS / "val_000.parquet").is_file():
        pytest.skip(f"the docs corpus is not on this machine ({DOCS_CORPUS}; set AUTORESEARCH_SHARED_DATA)")
    import pyarrow.parquet as pq

    from autoresearch.data.build import prepare_dataset

    cache = tmp_path_factory.mktemp("docs-cache")
    shards = cache / "downloads" / "climbmix"
    shards.mkdir(parents=True)
    (shards / "shard_00000.parquet").symlink_to(DOCS_CORPUS / "train_002.parquet")
    pq.write_table(pq.read_table(DOCS_CORPUS / "train_001.parquet").slice(0, 40), shards / "shard_00001.parquet")
    (shards / "shard_00002.parquet").symlink_to(DOCS_CORPUS / "val_000.parquet")
    return prepare_dataset("climbmix", name="docs-climbmix", num_shards=1, last_shard=2, vocab_size=2048,
                           show_progress=False, cache_dir=cache)


def test_the_evaluator_gives_the_reference_number_on_the_docs_corpus(docs_climbmix: Path, tmp_path: Path) -> None:
    manifest = json.loads((docs_climbmix / "manifest.json").read_text())
    assert [entry["file"] for entry in manifest["inputs"] if entry["split"] == "val"] == ["shard_00002.parquet"]
    assert manifest["splits"]["val"]["documents"] == 425
    ours, reference = cross_check(docs_climbmix, tmp_path, seq_len=256, eval_tokens=256 * 16, batch_size=8)
    print(f"docs corpus: evaluator {ours!r}, reference definitions {reference!r}")
    assert ours == pytest.approx(reference, rel=1e-6)
