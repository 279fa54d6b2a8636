"""Tests of prepare.py: constants, tokenizer, best-fit packing, the dataloader and evaluate_bpb."""

from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from autoresearch import contract
from autoresearch.data import layout

REPO_ROOT = Path(__file__).resolve().parents[1]
PREPARE_PY = REPO_ROOT / "prepare.py"


def load_prepare():
    """A fresh copy of prepare.py, so its module-level constants re-read the environment."""
    spec = importlib.util.spec_from_file_location("prepare", PREPARE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def prepare(tiny_dataset, monkeypatch):
    monkeypatch.setenv(contract.ENV_DATA_DIR, str(tiny_dataset))
    for name in (contract.ENV_SEED, contract.ENV_TRAIN_ONLY, contract.ENV_MAX_SEQ_LEN,
                 contract.ENV_EVAL_TOKENS):
        monkeypatch.delenv(name, raising=False)
    return load_prepare()


def split_documents(dataset_dir: Path, split: str) -> list[np.ndarray]:
    tokens, starts = layout.read_split(dataset_dir, split)
    return [np.asarray(tokens[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]


def take(loader, n: int) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    return [next(loader) for _ in range(n)]


def full_rows(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The packed rows of T+1 tokens back from (x, y)."""
    return torch.cat([x, y[:, -1:]], dim=1).numpy()


# --- constants ---------------------------------------------------------------------------------


def test_env_names_and_defaults_agree_with_the_contract(monkeypatch):
    source = PREPARE_PY.read_text()
    runtime = (contract.ENV_MAX_SEQ_LEN, contract.ENV_TIME_BUDGET, contract.ENV_EVAL_TOKENS,
               contract.ENV_SEED, contract.ENV_TRAIN_ONLY)
    for name in (*runtime, contract.ENV_DATA_DIR, contract.ENV_CACHE_DIR, contract.ENV_DATASET):
        assert f'"{name}"' in source, name
    for name in runtime:
        monkeypatch.delenv(name, raising=False)
    module = load_prepare()
    assert module.MAX_SEQ_LEN == contract.DEFAULT_MAX_SEQ_LEN
    assert module.TIME_BUDGET == contract.DEFAULT_TIME_BUDGET
    assert module.EVAL_TOKENS == contract.DEFAULT_EVAL_TOKENS
    assert module.SEED == 42 and module.TRAIN_ONLY is False
    assert contract.dataset_dir() == module.DATA_DIR
    assert module.BOS_TOKEN == layout.BOS_TOKEN
    from autoresearch.data.manifest import FORMAT_VERSION

    assert module.FORMAT_VERSION == FORMAT_VERSION  # prepare.py refuses what the harness refuses

    monkeypatch.setenv(contract.ENV_DATASET, "other")
    monkeypatch.setenv(contract.ENV_MAX_SEQ_LEN, "128")
    monkeypatch.setenv(contract.ENV_TIME_BUDGET, "12.5")
    monkeypatch.setenv(contract.ENV_SEED, "7")
    monkeypatch.setenv(contract.ENV_TRAIN_ONLY, "1")
    module = load_prepare()
    assert contract.dataset_dir() == module.DATA_DIR and module.DATA_DIR.name == "other"
    assert (module.MAX_SEQ_LEN, module.TIME_BUDGET, module.SEED, module.TRAIN_ONLY) == (128, 12.5, 7, True)
    monkeypatch.setenv(contract.ENV_DATA_DIR, "/somewhere/else")
    assert load_prepare().DATA_DIR == contract.dataset_dir() == Path("/somewhere/else")


# --- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_agrees_with_the_layout_reader(prepare, tiny_dataset):
    tokenizer = prepare.Tokenizer.from_directory()
    spec = layout.read_tokenizer(tiny_dataset)
    reference = spec.encoding()
    text = "Ada found the kite. Then Zoë was happy about the 🪁 kite!\n"
    ids = tokenizer.encode(text)
    assert ids == reference.encode_ordinary(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(torch.tensor(ids)) == text
    assert tokenizer.get_vocab_size() == spec.vocab_size == 320
    assert tokenizer.get_bos_token_id() == spec.bos_id
    assert tokenizer.encode(text, prepend="<|reserved_0|>") == [spec.bos_id, *ids]
    bo = reference.encode_ordinary("Bo")
    assert tokenizer.encode([text, "Bo"], prepend=spec.bos_id) == [[spec.bos_id, *ids], [spec.bos_id, *bo]]
    assert tokenizer.encode("<|reserved_0|>") != [spec.bos_id]  # special-token text in input stays text
    token_bytes = prepare.get_token_bytes()
    assert token_bytes.dtype == torch.int32
    assert token_bytes.tolist() == layout.read_token_bytes(tiny_dataset).tolist()
    assert token_bytes[spec.bos_id] == 0


def test_a_missing_dataset_says_to_run_prepare(tmp_path, monkeypatch):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "tokenizer.json").write_text("{}")  # an interrupted prepare: no manifest
    monkeypatch.setenv(contract.ENV_DATA_DIR, str(tmp_path / "half"))
    module = load_prepare()
    with pytest.raises(RuntimeError, match="autoresearch prepare"):
        module.Tokenizer.from_directory()
    with pytest.raises(RuntimeError, match="autoresearch prepare"):
        module.get_token_bytes()


# --- packing -----------------------------------------------------------------------------------


class DocumentIndex:
    """Recognises packed segments as whole documents or as crops (prefixes) of documents."""

    def __init__(self, documents: list[np.ndarray]):
        self.whole = {tuple(doc.tolist()): i for i, doc in enumerate(documents)}
        self.prefixes: dict[tuple, set[int]] = {}
        for i, doc in enumerate(documents):
            for end in range(1, len(doc) + 1):
                self.prefixes.setdefault(tuple(doc[:end].tolist()), set()).add(i)

    def segments(self, row: np.ndarray, bos: int) -> list[tuple[int | None, set[int]]]:
        """(whole document id or None, candidate ids when cropped) per segment of a packed row;
        asserts the row starts at a BOS, holds only runs of real documents and crops only its last."""
        assert row[0] == bos
        cuts = [*np.flatnonzero(row == bos).tolist(), len(row)]
        found = []
        for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
            segment = tuple(row[a:b].tolist())
            if segment in self.whole:
                found.append((self.whole[segment], set()))
            else:
                assert k == len(cuts) - 2, "a cropped document in the middle of a row"
                assert segment in self.prefixes, "tokens that are not a contiguous run of a document"
                found.append((None, self.prefixes[segment]))
        return found


def assert_each_document_once(segments: list[tuple[int | None, set[int]]], n_docs: int) -> None:
    """The segments of one epoch hold every document once: whole, or as a crop that could be it."""
    assert len(segments) == n_docs
    wholes = [whole for whole, _ in segments if whole is not None]
    crops = [candidates for whole, candidates in segments if whole is None]
    assert len(set(wholes)) == len(wholes), "a document packed twice in one epoch"
    missing = set(range(n_docs)) - set(wholes)
    assert len(crops) == len(missing), "documents lost (or repeated as crops) in one epoch"
    assert all(candidates & missing for candidates in crops)
    assert set().union(*crops) >= missing


def test_rows_are_bos_aligned_whole_documents_cropped_only_at_row_ends(prepare, tiny_dataset):
    tokenizer = prepare.Tokenizer.from_directory()
    bos = tokenizer.get_bos_token_id()
    documents = split_documents(tiny_dataset, "train")
    index = DocumentIndex(documents)
    B, T = 8, 64
    loader = prepare.make_dataloader(tokenizer, B, T, "train", device="cpu")
    segments = []
    epochs = []
    while not epochs or epochs[-1] < 2:
        x, y, epoch = next(loader)
        epochs.append(epoch)
        assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == torch.int64
        assert x.is_contiguous() and y.is_contiguous()
        assert torch.equal(x[:, 1:], y[:, :-1])
        for row in full_rows(x, y):
            segments += index.segments(row, bos)
    loader.close()
    assert epochs[0] == 1 and epochs == sorted(epochs)
    assert_each_document_once(segments[: len(documents)], len(documents))


def test_each_epoch_packs_every_document_exactly_once(prepare, tiny_dataset):
    tokens, starts = layout.read_split(tiny_dataset, "train")
    bos = int(tokens[0])
    documents = split_documents(tiny_dataset, "train")
    index = DocumentIndex(documents)
    packer = prepare.BestFitPacker(tokens, starts, 65, seed=1, buffer_size=50)  # buffer < split
    row = np.empty((1, 65), dtype=tokens.dtype)
    segments = []
    for epoch in (1, 2):
        while packer.docs_packed < epoch * len(documents):
            packer.fill(row)
            segments += index.segments(row[0], bos)
        assert len(segments) == packer.docs_packed
        assert_each_document_once(segments[(epoch - 1) * len(documents) : epoch * len(documents)],
                                  len(documents))
        assert packer.epoch == epoch + 1


def test_best_fit_choice_and_crop_on_a_hand_made_split():
    module = load_prepare()
    bos = 99
    docs = [[bos, 1, 1, 1, 1], [bos, 2, 2, 2, 2], [bos, 3, 3, 3, 3]]  # three documents of length 5
    tokens = np.array([t for doc in docs for t in doc], dtype=np.uint16)
    starts = np.array([0, 5, 10, 15], dtype=np.int64)
    packer = module.BestFitPacker(tokens, starts, row_len=8, shuffle=False)
    rows = np.zeros((1, 8), dtype=np.uint16)
    assert packer.fill(rows) == 1
    # the first of the length-5 documents fits; then 3 tokens are left and none fits: the
    # shortest (of equal lengths, the latest to arrive) is cropped to fill the row
    assert rows[0].tolist() == [bos, 1, 1, 1, 1, bos, 3, 3]
    assert packer.docs_packed == 2

    docs = [[bos, *range(1, 12)], [bos, 20, 21], [bos, 30, 31, 32, 33, 34]]  # 12, 3 and 6 tokens
    tokens = np.array([t for doc in docs for t in doc], dtype=np.uint16)
    starts = np.array([0, 12, 15, 21], dtype=np.int64)
    packer = module.BestFitPacker(tokens, starts, row_len=9, shuffle=False, buffer_size=3)
    rows = np.zeros((2, 9), dtype=np.uint16)
    packer.fill(rows)
    assert rows[0].tolist() == [bos, *range(1, 9)]  # the long document alone, cropped to a row
    assert rows[1].tolist() == [bos, 30, 31, 32, 33, 34, bos, 20, 21]  # best fit: 6 then 3, no waste
    assert packer.docs_packed == 3 and packer.epoch == 2

    docs = [[bos, 1, 1, 1, 1, 1], [bos, 2, 2, 2, 2]]  # 6 and 5 tokens in rows of 10
    tokens = np.array([t for doc in docs for t in doc], dtype=np.uint16)
    packer = module.BestFitPacker(tokens, np.array([0, 6, 11]), row_len=10, shuffle=False)
    rows = np.zeros((1, 10), dtype=np.uint16)
    packer.fill(rows)
    assert rows[0].tolist() == [bos, 1, 1, 1, 1, 1, bos, 2, 2, 2]  # one token too long: cropped


def test_every_epoch_has_its_own_order(prepare, tiny_dataset):
    tokens, starts = layout.read_split(tiny_dataset, "train")
    packer = prepare.BestFitPacker(tokens, starts, 257, seed=3)
    rows = np.empty((1, 257), dtype=tokens.dtype)
    first_rows = {}
    while packer.epoch <= 3:
        epoch = packer.epoch
        packer.fill(rows)
        first_rows.setdefault(epoch, rows[0].copy())
    assert not np.array_equal(first_rows[1], first_rows[2])
    assert not np.array_equal(first_rows[2], first_rows[3])


def test_same_seed_same_batches_other_seed_other_ones_val_ignores_the_seed(prepare, monkeypatch):
    tokenizer = prepare.Tokenizer.from_directory()

    def first_batches(module, split):
        loader = module.make_dataloader(tokenizer, 4, 32, split, device="cpu")
        batches = [x.clone() for x, _, _ in take(loader, 3)]
        loader.close()
        return torch.stack(batches)

    first = first_batches(prepare, "train")
    assert torch.equal(first, first_batches(prepare, "train"))
    assert torch.equal(first, first_batches(load_prepare(), "train"))
    val = first_batches(prepare, "val")
    monkeypatch.setenv(contract.ENV_SEED, "7")
    reseeded = load_prepare()
    assert reseeded.SEED == 7
    assert not torch.equal(first, first_batches(reseeded, "train"))
    assert torch.equal(val, first_batches(reseeded, "val"))


def test_a_split_smaller_than_a_batch_cycles_epochs(prepare, tiny_dataset):
    tokenizer = prepare.Tokenizer.from_directory()
    n_val_tokens = len(layout.read_split(tiny_dataset, "val")[0])
    B, T = 16, 512
    assert 2 * n_val_tokens < B * T
    loader = prepare.make_dataloader(tokenizer, B, T, "val", device="cpu")
    epochs = [epoch for _, _, epoch in take(loader, 3)]
    loader.close()
    assert epochs[0] >= 2 and epochs[0] < epochs[1] < epochs[2]


def test_batches_handed_over_are_never_rewritten(prepare):
    tokenizer = prepare.Tokenizer.from_directory()
    loader = prepare.make_dataloader(tokenizer, 4, 32, "train", device="cpu")
    x, y, _ = next(loader)
    kept = (x.clone(), y.clone())
    take(loader, 6)  # the thread keeps packing ahead meanwhile
    assert torch.equal(x, kept[0]) and torch.equal(y, kept[1])
    loader.close()


def test_the_packing_thread_stops_when_the_loader_goes_away(prepare):
    tokenizer = prepare.Tokenizer.from_directory()
    before = {t for t in threading.enumerate() if t.name == "prepare-dataloader"}
    loader = prepare.make_dataloader(tokenizer, 2, 16, "train", device="cpu")
    next(loader)
    (thread,) = {t for t in threading.enumerate() if t.name == "prepare-dataloader"} - before
    del loader
    thread.join(timeout=2)
    assert not thread.is_alive()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches_and_survive_a_slow_consumer(prepare):
    tokenizer = prepare.Tokenizer.from_directory()
    on_cpu = prepare.make_dataloader(tokenizer, 8, 64, "train", device="cpu")
    on_gpu = prepare.make_dataloader(tokenizer, 8, 64, "train", device="cuda")
    kept = []
    for step in range(40):
        x, y, epoch = next(on_gpu)
        assert x.is_cuda and y.is_cuda and x.dtype == torch.int64 and x.is_contiguous()
        kept.append((x, y, epoch))
        if step % 5 == 0:  # keep the GPU busy so the copies really are in flight
            torch.cuda._sleep(10_000_000)
    torch.cuda.synchronize()
    for x, y, epoch in kept:
        cx, cy, cepoch = next(on_cpu)
        assert torch.equal(x.cpu(), cx) and torch.equal(y.cpu(), cy) and epoch == cepoch
    on_cpu.close()
    on_gpu.close()


def test_train_only_refuses_validation_without_opening_it(tiny_dataset, tmp_path, monkeypatch):
    dataset = tmp_path / "train-only"
    shutil.copytree(tiny_dataset, dataset)
    for split in ("val", "holdout"):  # as if they were not there: any attempt to read them fails
        layout.bin_path(dataset, split).unlink()
        layout.docs_path(dataset, split).unlink()
    monkeypatch.setenv(contract.ENV_DATA_DIR, str(dataset))
    monkeypatch.setenv(contract.ENV_TRAIN_ONLY, "1")
    module = load_prepare()
    tokenizer = module.Tokenizer.from_directory()
    for split in ("val", "holdout"):
        with pytest.raises(RuntimeError, match="scored by the harness"):
            module.make_dataloader(tokenizer, 2, 16, split, device="cpu")
    with pytest.raises(RuntimeError, match="scored by the harness"):
        module.evaluate_bpb(torch.nn.Linear(1, 1), tokenizer, 2)
    loader = module.make_dataloader(tokenizer, 2, 16, "train", device="cpu")
    assert next(loader)[0].shape == (2, 16)
    loader.close()


# --- evaluation --------------------------------------------------------------------------------


class UniformModel(torch.nn.Module):
    """Equal logits for every token: exactly log(V) nats per token."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*x.shape, self.vocab_size, dtype=torch.bfloat16) * self.scale


class BigramModel(torch.nn.Module):
    """Random bigram logits over a padded vocabulary (as real models pad it to a multiple of 64)."""

    def __init__(self, vocab_size: int, padded_size: int):
        super().__init__()
        self.table = torch.nn.Embedding(vocab_size, padded_size)
        torch.nn.init.normal_(self.table.weight, std=2.0, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table(x)


@pytest.fixture
def eval_prepare(tiny_dataset, monkeypatch):
    monkeypatch.setenv(contract.ENV_DATA_DIR, str(tiny_dataset))
    monkeypatch.setenv(contract.ENV_MAX_SEQ_LEN, "128")
    monkeypatch.setenv(contract.ENV_EVAL_TOKENS, str(10 * 128))
    monkeypatch.delenv(contract.ENV_TRAIN_ONLY, raising=False)
    return load_prepare()


def test_evaluate_bpb_of_uniform_logits_is_log2_vocab_times_tokens_per_byte(eval_prepare, tiny_dataset):
    from autoresearch.evaluate import pack_eval_rows

    tokenizer = eval_prepare.Tokenizer.from_directory()
    V = tokenizer.get_vocab_size()
    bpb = eval_prepare.evaluate_bpb(UniformModel(V), tokenizer, batch_size=4)

    token_bytes = layout.read_token_bytes(tiny_dataset)
    targets = pack_eval_rows(tiny_dataset, "val", 128, 10 * 128, cache=False)[:, 1:].ravel()
    assert len(targets) == 10 * 128
    scored = token_bytes[targets] > 0
    assert scored.sum() < len(targets)  # the BOS targets are really left out
    expected = math.log2(V) * scored.sum() / token_bytes[targets].sum()
    assert bpb == pytest.approx(expected, rel=1e-6)  # float32 cross-entropy


def test_evaluate_bpb_gives_the_harness_number(eval_prepare, tiny_dataset):
    from autoresearch.evaluate import bits_per_byte, pack_eval_rows

    tokenizer = eval_prepare.Tokenizer.from_directory()
    V = tokenizer.get_vocab_size()
    model = BigramModel(V, padded_size=V + 64)
    bpb = eval_prepare.evaluate_bpb(model, tokenizer, batch_size=3)
    rows = pack_eval_rows(tiny_dataset, "val", 128, 10 * 128, cache=False)
    harness = bits_per_byte(model, rows, layout.read_token_bytes(tiny_dataset), batch_size=3)
    assert bpb == pytest.approx(harness.bpb, rel=1e-9)
    assert bpb < math.log2(V) * 0.99 or bpb > math.log2(V) * 1.01  # not the uniform answer by accident


# --- command line ------------------------------------------------------------------------------


def test_running_prepare_py_is_the_prepare_command():
    from autoresearch.cli import app

    if "prepare" not in {command.name or command.callback.__name__ for command in app.registered_commands}:
        pytest.skip("the prepare command is not registered yet")
    done = subprocess.run([sys.executable, str(PREPARE_PY), "--help"], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "prepare" in done.stdout.lower()


def test_importing_prepare_does_not_import_the_harness():
    code = "import sys, prepare; print('autoresearch' in sys.modules)"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False", f"took {time.perf_counter() - started:.1f}s"
