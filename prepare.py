"""
The fixed runtime file that `train.py` imports: constants, tokenizer, dataloader, evaluation.

    from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, make_dataloader, evaluate_bpb

    tokenizer = Tokenizer.from_directory()
    loader = make_dataloader(tokenizer, B, T, "train")    # endless (x, y, epoch), packed best-fit
    x, y, epoch = next(loader)                            # int64 (B, T) on the device, y = x shifted
    val_bpb = evaluate_bpb(model, tokenizer, batch_size)  # standalone runs only: model(x) -> logits

The agent reads this file but never edits it. It is standalone on purpose: it does not import the
`autoresearch` package, so it repeats the environment-variable names of `autoresearch/contract.py`
and the on-disk format of `autoresearch/data/layout.py` as literals (a test checks they agree).

A prepared dataset directory holds manifest.json (written last), tokenizer.json, token_bytes.npy
and, per split (train, val, holdout), <split>.bin (flat token ids, every document = BOS + tokens)
and <split>.docs.npy (int64 document start offsets, plus the total at the end).

Build one with `autoresearch prepare` (or `python prepare.py`, the same command).

The scoring definitions are the reference's (karpathy/autoresearch): four special tokens with
<|reserved_0|> as BOS, token byte counts from the UTF-8 of each decoded token, and validation
rows packed best-fit from a buffer of 1000 documents (see "Evaluation" below). A dataset of an
older format is refused with the command that rebuilds it.

What this file does NOT protect against: a train.py that reads the val/holdout files itself, or a
dataset edited after it was prepared (no hashes are checked here; the harness checks them). Under the harness
(AUTORESEARCH_TRAIN_ONLY=1) the validation helpers below refuse to run, but the real guarantee
is that the harness scores the trained weights with its own evaluator.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
import weakref
from bisect import bisect_left, insort
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# Constants: what the harness tells train.py, through environment variables

MAX_SEQ_LEN = int(os.environ.get("AUTORESEARCH_MAX_SEQ_LEN") or 2048)  # context length
TIME_BUDGET = float(os.environ.get("AUTORESEARCH_TIME_BUDGET") or 300)  # training seconds
EVAL_TOKENS = int(os.environ.get("AUTORESEARCH_EVAL_TOKENS") or 40 * 524288)  # val tokens scored
SEED = int(os.environ.get("AUTORESEARCH_SEED") or 42)  # shuffles the training documents
TRAIN_ONLY = os.environ.get("AUTORESEARCH_TRAIN_ONLY") == "1"  # the harness scores, not train.py


def _default_data_dir() -> Path:
    explicit = os.environ.get("AUTORESEARCH_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("AUTORESEARCH_CACHE_DIR")
    cache_dir = Path(cache).expanduser() if cache else Path.home() / ".cache" / "autoresearch"
    return cache_dir / "datasets" / (os.environ.get("AUTORESEARCH_DATASET") or "climbmix")


DATA_DIR = _default_data_dir()
BOS_TOKEN = "<|reserved_0|>"  # the first of the reference's four special tokens
FORMAT_VERSION = 2  # of the prepared dataset (autoresearch/data/manifest.py says what changed)


def _read_manifest(data_dir: Path) -> dict:
    """The dataset's manifest; a directory without one was never (fully) prepared."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise RuntimeError(
            f"no prepared dataset at {data_dir} (manifest.json is missing): "
            "run `autoresearch prepare` (or `python prepare.py`) first"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise RuntimeError(
            f"the dataset at {data_dir} has format {manifest.get('format_version')}, this prepare.py reads "
            f"{FORMAT_VERSION}: rebuild it with `autoresearch prepare --name {Path(data_dir).name} --force`"
        )
    return manifest


# ---------------------------------------------------------------------------------------------
# Tokenizer: a tiktoken encoding rebuilt from tokenizer.json


class Tokenizer:
    """BPE tokenizer of a prepared dataset. Token i is the byte string ranks[i]; the four special
    tokens <|reserved_0|> .. <|reserved_3|> come after the ranks, <|reserved_0|> is BOS."""

    def __init__(self, encoding, bos_token_id: int, data_dir: Path):
        self.enc = encoding
        self.bos_token_id = bos_token_id
        self.data_dir = Path(data_dir)

    @classmethod
    def from_directory(cls, data_dir: Path | str = DATA_DIR) -> Tokenizer:
        import base64

        import tiktoken

        data_dir = Path(data_dir)
        _read_manifest(data_dir)
        payload = json.loads((data_dir / "tokenizer.json").read_text())
        ranks = {base64.b64decode(token): rank for rank, token in enumerate(payload["ranks"])}
        special_tokens = {name: int(i) for name, i in payload["special_tokens"].items()}
        encoding = tiktoken.Encoding(name="autoresearch", pat_str=payload["pattern"],
                                     mergeable_ranks=ranks, special_tokens=special_tokens)
        return cls(encoding, special_tokens[payload.get("bos_token", BOS_TOKEN)], data_dir)

    def get_vocab_size(self) -> int:
        return self.enc.n_vocab

    def get_bos_token_id(self) -> int:
        return self.bos_token_id

    def encode(self, text: str | list[str], prepend: int | str | None = None) -> list[int] | list[list[int]]:
        """Token ids of a text (or of each text in a list), optionally after one prepended token
        (an id, or a special token's name such as "<|reserved_0|>"). Special-token text is not parsed."""
        if isinstance(prepend, str):
            prepend = self.enc.encode_single_token(prepend)
        if isinstance(text, str):
            ids = self.enc.encode_ordinary(text)
            return ids if prepend is None else [prepend, *ids]
        batch = self.enc.encode_ordinary_batch(list(text), num_threads=8)
        return batch if prepend is None else [[prepend, *ids] for ids in batch]

    def decode(self, ids) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.enc.decode(list(ids))


def get_token_bytes(device: str | torch.device = "cpu") -> torch.Tensor:
    """int32[vocab]: bytes per token for bits per byte, the UTF-8 length of the token decoded on
    its own (a partial character decodes to U+FFFD, 3 bytes), 0 for special tokens."""
    _read_manifest(DATA_DIR)
    return torch.from_numpy(np.load(DATA_DIR / "token_bytes.npy").astype(np.int32)).to(device)


# ---------------------------------------------------------------------------------------------
# Packing: BOS-aligned best-fit
#
# Each row holds T+1 tokens (x = row[:-1], y = row[1:]) and starts with a document's BOS. The
# row is filled with WHOLE documents, each time the largest one that still fits the remaining
# space, chosen from a buffer of upcoming documents. When no document in the buffer fits, the
# shortest one is cropped to fill the row exactly and its remainder is DROPPED (it is not carried
# into the next row: every row must start at a BOS). A document longer than a whole row is
# cropped to T+1 tokens when it enters the buffer, so it fills one row on its own. No padding.
#
# Epochs: the buffer is refilled only from the current pass over the split. When the pass runs
# out, the buffer is drained before the next pass (in a new shuffled order) begins. So within
# every epoch each document goes into a row exactly once, whole or cropped at a row's end; a
# document of an awkward length cannot wait in the buffer for longer than its epoch.
#
# Speed: the choice is made over document lengths only. The buffer is one sorted Python list of
# integer keys, (length << 32) | (2**32 - 1 - arrival), so "largest that fits" is a single bisect
# and, among documents of equal length, the one that arrived first goes first (the shuffled order
# is kept). The tokens of a whole batch are then copied from the memory-mapped split with one
# vectorized gather.

_ARRIVAL_BITS = 32  # documents per pass up to 2**32
_ARRIVAL_MASK = (1 << _ARRIVAL_BITS) - 1


class BestFitPacker:
    """Packs rows of `row_len` tokens from one split, endlessly, pass after pass.

    Each pass visits the documents in a fresh order, a permutation seeded by (seed, pass); with
    shuffle=False in stored order (validation, so that its rows do not depend on the trial's
    seed). `epoch` is the pass being packed, counted from 1: n_docs documents into rows per epoch.
    """

    def __init__(self, tokens: np.ndarray, doc_starts: np.ndarray, row_len: int, seed: int = SEED,
                 shuffle: bool = True, buffer_size: int = 1000):
        self.tokens = np.asarray(tokens)  # a plain ndarray view of the memmap
        self.doc_starts = np.asarray(doc_starts, dtype=np.int64)
        self.row_len = row_len
        self.seed = seed
        self.shuffle = shuffle
        self.buffer_size = buffer_size
        self.n_docs = len(self.doc_starts) - 1
        if self.n_docs < 1:
            raise RuntimeError("the split holds no documents")
        self.capped_lengths = np.minimum(np.diff(self.doc_starts), row_len)
        self.docs_packed = 0
        self.passes_started = 0
        self.buffer: list[int] = []
        self._upcoming = iter(())  # keys of the current pass not yet in the buffer
        self._pass_starts = self.doc_starts[:0]  # start offsets of this pass's documents, by arrival
        self._positions = np.arange(0, dtype=np.int64)  # 0, 1, ... rows.size - 1, kept for the gather

    def _start_pass(self) -> None:
        """Begin the next pass over the split: a new order, and a full buffer."""
        self.passes_started += 1
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.passes_started]).permutation(self.n_docs)
        else:
            order = np.arange(self.n_docs)
        self._pass_starts = self.doc_starts[order]
        self._upcoming = self._keys_in_order(order)
        self.buffer[:] = sorted(islice(self._upcoming, self.buffer_size))

    def _keys_in_order(self, order: np.ndarray, chunk: int = 8192):
        """Buffer keys of the documents in arrival order, made a chunk at a time."""
        for lo in range(0, len(order), chunk):
            arrival = np.arange(lo, min(lo + chunk, len(order)), dtype=np.int64)
            keys = (self.capped_lengths[order[lo : lo + chunk]] << _ARRIVAL_BITS) | (_ARRIVAL_MASK - arrival)
            yield from keys.tolist()

    def fill(self, rows: np.ndarray) -> int:
        """Pack every row of `rows` (a C-contiguous (B, row_len) array) in place; return the epoch
        after this batch.

        Two steps: choose the pieces (which document, how many tokens) in a Python loop over
        buffer keys only, then copy all the tokens with one vectorized gather.
        """
        n_rows, row_len = rows.shape
        assert row_len == self.row_len and rows.flags.c_contiguous
        buffer, upcoming = self.buffer, self._upcoming
        starts = []  # start offsets of the chosen documents, resolved once per pass
        keys, takes = [], []  # buffer key and number of tokens taken, per piece, in row order
        for _ in range(n_rows):
            pos = 0
            while pos < row_len:
                if not buffer:  # this pass is fully packed: begin the next one
                    starts.append(self._starts_of(keys))
                    keys = []
                    self._start_pass()
                    upcoming = self._upcoming
                space = row_len - pos
                i = bisect_left(buffer, (space + 1) << _ARRIVAL_BITS) - 1  # largest length <= space
                if i >= 0:
                    key = buffer.pop(i)
                    take = key >> _ARRIVAL_BITS
                else:  # nothing fits: crop the shortest document, drop its remainder
                    key = buffer.pop(0)
                    take = space
                keys.append(key)
                takes.append(take)
                pos += take
                refill = next(upcoming, None)
                if refill is not None:
                    insort(buffer, refill)
        starts.append(self._starts_of(keys))
        # piece p fills rows.flat[dest[p] : dest[p] + takes[p]] from tokens[start[p] : ...]
        takes_array = np.array(takes, dtype=np.int64)
        dest = np.cumsum(takes_array) - takes_array
        if len(self._positions) != rows.size:
            self._positions = np.arange(rows.size, dtype=np.int64)
        source = np.repeat(np.concatenate(starts) - dest, takes_array)
        source += self._positions
        np.take(self.tokens, source, out=rows.reshape(-1))
        self.docs_packed += len(takes)
        return self.epoch

    def _starts_of(self, keys: list[int]) -> np.ndarray:
        """Start offsets of the documents behind buffer keys of the current pass."""
        arrival = _ARRIVAL_MASK - (np.array(keys, dtype=np.int64) & _ARRIVAL_MASK)
        return self._pass_starts[arrival]

    @property
    def epoch(self) -> int:
        return 1 + self.docs_packed // self.n_docs


def _open_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens memmap, document starts) of one split of a prepared dataset."""
    manifest = _read_manifest(data_dir)
    default_dtype = "uint16" if manifest["vocab_size"] <= 65536 else "uint32"
    dtype = np.dtype(manifest.get("token_dtype") or default_dtype)
    tokens = np.memmap(data_dir / f"{split}.bin", dtype=dtype, mode="r")
    doc_starts = np.load(data_dir / f"{split}.docs.npy")
    return tokens, doc_starts


# ---------------------------------------------------------------------------------------------
# Dataloader: packing in a background thread, batches handed over as (x, y, epoch)


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        wanted = os.environ.get("AUTORESEARCH_DEVICE", "auto")
        if wanted != "auto":
            return torch.device(wanted)
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless asked to stop; False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event):
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return None


def _produce(packer: BestFitPacker, B: int, T: int, ready: queue.Queue, free: queue.Queue | None,
             pinned: list[torch.Tensor] | None, stop: threading.Event) -> None:
    """Background thread: pack a batch, write x and y into a host buffer, hand it over.

    On CUDA the host buffers are a small pool of pinned tensors. A buffer comes back through
    `free` with the CUDA event recorded after its last host-to-device copy; we wait on that event
    before writing into it again, so an asynchronous copy never reads a half-rewritten buffer.
    """
    try:
        rows = np.empty((B, T + 1), dtype=packer.tokens.dtype)
        while not stop.is_set():
            epoch = packer.fill(rows)
            if pinned is not None:
                got = _get(free, stop)
                if got is None:
                    return
                slot, copied = got
                if copied is not None:
                    copied.synchronize()
                host = pinned[slot]
            else:
                slot, host = None, torch.empty((2, B, T), dtype=torch.int64)
            host_np = host.numpy()
            np.copyto(host_np[0], rows[:, :-1])  # x
            np.copyto(host_np[1], rows[:, 1:])  # y
            if not _put(ready, (slot, host, epoch), stop):
                return
    except BaseException as error:  # hand any failure to the consumer instead of hanging it
        _put(ready, error, stop)


class DataLoader:
    """Infinite iterator of (x, y, epoch); x and y are contiguous int64 (B, T) tensors on device.

    Packing runs ahead in a daemon thread (`prefetch` batches). The thread stops when the
    iterator is closed or garbage collected.
    """

    def __init__(self, packer: BestFitPacker, B: int, T: int, device: torch.device, prefetch: int = 2):
        self.device = device
        self._stop = threading.Event()
        self._ready: queue.Queue = queue.Queue(maxsize=prefetch)
        self._free: queue.Queue | None = None
        pinned = None
        if device.type == "cuda":
            pinned = [torch.empty((2, B, T), dtype=torch.int64, pin_memory=True) for _ in range(prefetch + 2)]
            self._free = queue.Queue()
            for slot in range(len(pinned)):
                self._free.put((slot, None))
        self._thread = threading.Thread(target=_produce, name="prepare-dataloader", daemon=True,
                                        args=(packer, B, T, self._ready, self._free, pinned, self._stop))
        self._thread.start()
        # stop (and wait for) the thread once this loader is unreachable, or at interpreter exit
        self._finalizer = weakref.finalize(self, _stop_thread, self._stop, self._thread)

    def __iter__(self) -> DataLoader:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        while True:
            try:
                item = self._ready.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError("the dataloader is closed") from None
        if isinstance(item, BaseException):
            self.close()
            raise RuntimeError("the dataloader's packing thread failed") from item
        slot, host, epoch = item
        if self.device.type == "cuda":
            batch = host.to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record()  # on the current stream, right after the copy was queued
            self._free.put((slot, copied))
        elif self.device.type != "cpu":
            batch = host.to(self.device)
        else:
            batch = host
        return batch[0], batch[1], epoch

    def close(self) -> None:
        """Stop the packing thread and wait for it (it finishes the batch it is packing)."""
        self._finalizer()


def _stop_thread(stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    if thread is not threading.current_thread():
        thread.join(timeout=5.0)


def make_dataloader(tokenizer: Tokenizer, B: int, T: int, split: str,
                    device: str | torch.device | None = None, buffer_size: int = 1000) -> DataLoader:
    """An endless iterator of (x, y, epoch) batches from one split, packed best-fit (see above).

    Training documents are shuffled per epoch (seeded by SEED and the epoch); val and holdout
    keep their stored order so evaluation does not depend on the seed. device=None picks
    $AUTORESEARCH_DEVICE, else CUDA, MPS or CPU, whichever is available first.
    """
    if split not in ("train", "val", "holdout"):
        raise ValueError(f"split must be train, val or holdout, not {split!r}")
    if TRAIN_ONLY and split != "train":
        raise RuntimeError(f"the {split} split is scored by the harness (AUTORESEARCH_TRAIN_ONLY=1): "
                           "train.py only reads train")
    data_dir = getattr(tokenizer, "data_dir", DATA_DIR)
    tokens, doc_starts = _open_split(data_dir, split)
    packer = BestFitPacker(tokens, doc_starts, T + 1, seed=SEED, shuffle=(split == "train"),
                           buffer_size=buffer_size)
    return DataLoader(packer, B, T, _resolve_device(device))


# ---------------------------------------------------------------------------------------------
# Evaluation: bits per byte on validation, for standalone runs (the harness scores separately)
#
# The rows are the reference's validation rows, and the harness evaluator's, so a standalone run
# prints the number the harness would give. The documents of the split stream in stored order,
# endlessly (a split that runs out starts again), in chunks of 128 documents; before every choice
# chunks are appended to a buffer until it holds at least 1000. Each row (T+1 tokens) is filled
# from a BOS with the longest buffered document that fits the space left (the first buffered
# among equals); when none fits, the shortest (first buffered among equals) is cropped to fill the
# row and its remainder dropped. Documents are never cut on entering the buffer. There are
# EVAL_TOKENS // T rows whatever the batch size (the reference scores whole batches:
# EVAL_TOKENS // (batch_size * T) of them, the same rows when the batch size divides the count).


def _eval_pieces(doc_lengths: list[int], n_rows: int, row_len: int, buffer_size: int = 1000,
                 chunk: int = 128) -> tuple[list[int], list[int]]:
    """(document, tokens taken) per piece of the rows, in order; keys as in BestFitPacker."""
    buffer: list[int] = []
    arrived: list[int] = []
    next_doc, docs, takes = 0, [], []
    for _ in range(n_rows):
        pos = 0
        while pos < row_len:
            while len(buffer) < buffer_size:
                stop = min(next_doc + chunk, len(doc_lengths))
                for doc in range(next_doc, stop):
                    insort(buffer, (doc_lengths[doc] << _ARRIVAL_BITS) | (_ARRIVAL_MASK - len(arrived)))
                    arrived.append(doc)
                next_doc = 0 if stop == len(doc_lengths) else stop
            space = row_len - pos
            i = bisect_left(buffer, (space + 1) << _ARRIVAL_BITS) - 1
            if i < 0:  # nothing fits: the shortest length, its first-buffered document
                i = bisect_left(buffer, ((buffer[0] >> _ARRIVAL_BITS) + 1) << _ARRIVAL_BITS) - 1
            key = buffer.pop(i)
            take = min(key >> _ARRIVAL_BITS, space)
            docs.append(arrived[_ARRIVAL_MASK - (key & _ARRIVAL_MASK)])
            takes.append(take)
            pos += take
    return docs, takes


def _eval_rows(data_dir: Path, split: str, T: int, n_tokens: int) -> np.ndarray:
    tokens, doc_starts = _open_split(data_dir, split)
    lengths = np.diff(doc_starts)
    if len(lengths) == 0 or lengths.min() < 1:
        raise RuntimeError(f"the {split} split of {data_dir} holds no documents")
    n_rows, row_len = max(1, n_tokens // T), T + 1
    docs, takes = _eval_pieces(lengths.tolist(), n_rows, row_len)
    takes = np.array(takes, dtype=np.int64)
    source = np.repeat(doc_starts[docs] - (np.cumsum(takes) - takes), takes) + np.arange(n_rows * row_len)
    return np.asarray(tokens)[source].reshape(n_rows, row_len)


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, tokenizer: Tokenizer, batch_size: int) -> float:
    """Bits per byte of `model` on EVAL_TOKENS validation tokens at MAX_SEQ_LEN.

    The model is called as model(x) and returns logits (B, T, >= vocab); logits past the
    vocabulary (padding) are ignored, and the cross-entropy is computed here in float32. Summed
    nats over the target tokens are divided by ln(2) times their summed byte lengths; special
    tokens (byte length 0) are left out of both sums, so the number does not depend on the
    vocabulary size.
    """
    if TRAIN_ONLY:
        raise RuntimeError("evaluation is scored by the harness (AUTORESEARCH_TRAIN_ONLY=1): "
                           "train.py must not evaluate itself")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    token_bytes = np.load(tokenizer.data_dir / "token_bytes.npy").astype(np.int64)
    token_bytes = torch.from_numpy(token_bytes).to(device)
    vocab_size = len(token_bytes)
    rows = _eval_rows(tokenizer.data_dir, "val", MAX_SEQ_LEN, EVAL_TOKENS)
    rows_per_chunk = max(1, (1 << 27) // (MAX_SEQ_LEN * vocab_size))  # bounds the float32 logits copy
    total_nats, total_bytes = 0.0, 0
    for lo in range(0, len(rows), batch_size):
        batch = torch.from_numpy(rows[lo : lo + batch_size].astype(np.int64)).to(device)
        x, y = batch[:, :-1], batch[:, 1:]
        logits = model(x)
        for first in range(0, len(x), rows_per_chunk):
            chunk = logits[first : first + rows_per_chunk, :, :vocab_size].float()
            targets = y[first : first + rows_per_chunk].reshape(-1)
            nats = F.cross_entropy(chunk.reshape(-1, vocab_size), targets, reduction="none")
            target_bytes = token_bytes[targets]
            total_nats += nats[target_bytes > 0].double().sum().item()
            total_bytes += int(target_bytes.sum().item())
    return total_nats / (math.log(2) * max(1, total_bytes))


# ---------------------------------------------------------------------------------------------

if __name__ == "__main__":
    import sys

    from autoresearch.cli import main

    main(["prepare", *sys.argv[1:]])
