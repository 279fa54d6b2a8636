"""Tokenize documents on all cores and write one split incrementally in the `layout` format.

A `SplitWriter` buffers documents until about `batch_chars` characters, encodes the batch with
tiktoken's `encode_ordinary_batch` (which releases the GIL, so every core works), appends
`BOS + tokens` of each document to `<split>.bin`, and remembers the document lengths. `close()`
writes `<split>.docs.npy` and returns the split's counts. Memory stays bounded by one batch,
however large the corpus; the document offsets (8 bytes a document) are the only thing that
grows.

Special tokens in the text (a literal "<|reserved_0|>") are encoded as ordinary text, never as BOS.

What this does NOT protect against: a crash halfway leaves a partial `.bin` behind; the caller
writes into a temporary directory and only moves it into place once everything is done.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoresearch.data import layout

DEFAULT_BATCH_CHARS = 8_000_000


@dataclass
class SplitCounts:
    documents: int = 0
    tokens: int = 0  # including one BOS per document
    bytes: int = 0  # UTF-8 bytes of the text
    characters: int = 0

    def as_dict(self) -> dict:
        return {"documents": self.documents, "tokens": self.tokens, "bytes": self.bytes,
                "characters": self.characters}


class SplitWriter:
    """Appends tokenized documents to one split's files."""

    def __init__(self, dataset_dir: Path, split: str, encoding, bos_id: int, dtype: np.dtype,
                 batch_chars: int = DEFAULT_BATCH_CHARS, threads: int | None = None):
        self.dataset_dir = Path(dataset_dir)
        self.split = split
        self.encoding = encoding
        self.bos_id = bos_id
        self.dtype = np.dtype(dtype)
        self.batch_chars = batch_chars
        self.threads = threads or os.cpu_count() or 1
        self.counts = SplitCounts()
        self._pending: list[str] = []
        self._pending_chars = 0
        self._lengths: list[np.ndarray] = []
        self._sink = open(layout.bin_path(self.dataset_dir, split), "wb")  # noqa: SIM115 (closed in close/abort)

    def add(self, text: str) -> int:
        """Queue one document; returns the number of characters encoded by this call (0 or a batch)."""
        self._pending.append(text)
        self._pending_chars += len(text)
        if self._pending_chars >= self.batch_chars:
            return self.flush()
        return 0

    def flush(self) -> int:
        if not self._pending:
            return 0
        texts, chars = self._pending, self._pending_chars
        self._pending, self._pending_chars = [], 0
        encoded = self.encoding.encode_ordinary_batch(texts, num_threads=self.threads)
        lengths = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int64, count=len(encoded))
        total = int(lengths.sum())
        bos = (self.bos_id,)
        flat = np.fromiter(itertools.chain.from_iterable(itertools.chain(bos, ids) for ids in encoded),
                           dtype=self.dtype, count=total)
        self._sink.write(flat.tobytes())
        self._lengths.append(lengths)
        self.counts.documents += len(texts)
        self.counts.tokens += total
        self.counts.characters += chars
        self.counts.bytes += sum(len(text.encode("utf-8")) for text in texts)
        return chars

    def close(self) -> SplitCounts:
        self.flush()
        self._sink.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, dtype=np.int64)
        doc_starts = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=doc_starts[1:])
        np.save(layout.docs_path(self.dataset_dir, self.split), doc_starts)
        return self.counts

    def abort(self) -> None:
        if not self._sink.closed:
            self._sink.close()
