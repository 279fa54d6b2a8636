"""The validation rows the harness scores, packed by the reference's definition.

The reference (karpathy/autoresearch, prepare.py: `make_dataloader(..., "val")` inside
`evaluate_bpb`) builds its rows like this, and so does `pack_rows`:

- the documents of the split stream in stored order, each as BOS + tokens, endlessly: when the
  split runs out the stream starts again from its first document (a new epoch);
- the stream is read in chunks of REFILL_DOCUMENTS (128) documents, a chunk never spanning two
  epochs; before every choice, chunks are appended to a buffer until it holds at least
  BUFFER_DOCUMENTS (1000);
- each row of T + 1 tokens is filled from its start: each time, the LONGEST buffered document
  that fits the space left goes in whole (among equal lengths, the one buffered first); when none
  fits, the SHORTEST one (buffered first among equals) is cropped to fill the row exactly and its
  remainder is dropped. Documents are never cut when they enter the buffer, so one longer than a
  row waits until it is the shortest when nothing fits.

Where the harness differs from the reference, on purpose, and where it cannot know:

- the number of rows is max(1, tokens // T), whatever the batch size. The reference scores
  (EVAL_TOKENS // (batch_size * T)) * batch_size rows; the two agree whenever the batch size
  divides EVAL_TOKENS // T (10240 at the defaults: every power of two up to 8192 does). Rows do
  not depend on the batch size in either: they are one stream, cut into batches afterwards;
- the reference reads its chunks of 128 within each parquet row group, so a row group whose size
  is not a multiple of 128 ends in a shorter chunk. The prepared split does not keep row-group
  boundaries; a split is chunked as one group. The rows are identical when every row group of the
  val shard holds a multiple of 128 documents: climbmix's shards were written with row groups of
  1024 and a multiple of 1024 documents per shard (karpathy/nanochat,
  dev/repackage_data_reference.py), and so was the docs corpus;
- `prepare` drops empty and whitespace-only documents; the reference keeps them (a lone BOS).

Speed: the choice runs over integer keys in one sorted list, (length << 32) | (2**32 - 1 -
arrival), so "longest that fits" and "shortest" are one bisect each; the tokens of all rows are
then copied with one vectorized gather.

What this does NOT protect against: a split whose documents, prepared with another tokenizer or
another order, are not the reference's (the rows are only the reference's rows when the split is).
"""

from __future__ import annotations

from bisect import bisect_left, insort

import numpy as np

BUFFER_DOCUMENTS = 1000  # the reference's make_dataloader(buffer_size=1000)
REFILL_DOCUMENTS = 128  # the reference's _document_batches(tokenizer_batch_size=128)
_ARRIVAL_BITS = 32
_ARRIVAL_MASK = (1 << _ARRIVAL_BITS) - 1


def row_count(tokens: int, seq_len: int) -> int:
    """Rows scored for `tokens` validation tokens at context length `seq_len` (batch-size free)."""
    return max(1, tokens // seq_len)


def choose_pieces(doc_lengths: np.ndarray, n_rows: int, row_len: int, buffer_documents: int = BUFFER_DOCUMENTS,
                  refill_documents: int = REFILL_DOCUMENTS) -> tuple[np.ndarray, np.ndarray]:
    """(document index, tokens taken) of every piece, in row order; the pieces of each row sum to row_len."""
    lengths = [int(length) for length in doc_lengths]
    n_docs = len(lengths)
    if n_docs == 0 or min(lengths) < 1:
        raise ValueError("the split must hold documents of at least one token (BOS)")
    buffer: list[int] = []  # sorted keys
    arrivals: list[int] = []  # document index of each arrival
    next_doc = 0  # position in the current epoch
    docs, takes = [], []
    for _ in range(n_rows):
        pos = 0
        while pos < row_len:
            while len(buffer) < buffer_documents:
                chunk_end = min(next_doc + refill_documents, n_docs)
                for doc in range(next_doc, chunk_end):
                    insort(buffer, (lengths[doc] << _ARRIVAL_BITS) | (_ARRIVAL_MASK - len(arrivals)))
                    arrivals.append(doc)
                next_doc = 0 if chunk_end == n_docs else chunk_end
            space = row_len - pos
            i = bisect_left(buffer, (space + 1) << _ARRIVAL_BITS) - 1  # longest length <= space
            if i >= 0:
                key = buffer.pop(i)
                take = key >> _ARRIVAL_BITS
            else:  # nothing fits: the shortest, first buffered among equals, cropped to the space
                shortest = buffer[0] >> _ARRIVAL_BITS
                key = buffer.pop(bisect_left(buffer, (shortest + 1) << _ARRIVAL_BITS) - 1)
                take = space
            docs.append(arrivals[_ARRIVAL_MASK - (key & _ARRIVAL_MASK)])
            takes.append(take)
            pos += take
    return np.array(docs, dtype=np.int64), np.array(takes, dtype=np.int64)


def pack_rows(tokens: np.ndarray, doc_starts: np.ndarray, n_rows: int, row_len: int) -> np.ndarray:
    """(n_rows, row_len) rows of `tokens` (a split: documents at doc_starts, total at the end)."""
    doc_starts = np.asarray(doc_starts, dtype=np.int64)
    docs, takes = choose_pieces(np.diff(doc_starts), n_rows, row_len)
    dest = np.cumsum(takes) - takes  # where each piece starts in the flat rows
    source = np.repeat(doc_starts[docs] - dest, takes) + np.arange(n_rows * row_len, dtype=np.int64)
    rows = np.empty((n_rows, row_len), dtype=np.asarray(tokens).dtype)
    np.take(np.asarray(tokens), source, out=rows.reshape(-1))
    return rows
