"""Throughput of the prepare pipeline's two heavy steps: BPE training and tokenization.

    python bench/bench_tokenizer.py                       # docs corpus, vocab 8192
    python bench/bench_tokenizer.py --vocab-size 2048 --files '/path/*.parquet'

Measures, on the parquet files' `text` column:
  - train:       rustbpe training through `bpe.train_tokenizer` (documents cut at 10,000 chars,
                 as `prepare` does), MB of UTF-8 text fed per second;
  - encode:      tiktoken `encode_ordinary_batch` on all cores, MB/s;
  - encode+write: the full `encode.SplitWriter` path (encode, add BOS, flatten, write .bin), MB/s.
Prints a small table. Reading parquet is not timed.
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from autoresearch.data import bpe, layout
from autoresearch.data.encode import SplitWriter

DEFAULT_FILES = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "docs-corpus" / "*.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default=DEFAULT_FILES, help="glob of parquet files with a text column")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    paths = sorted(glob.glob(args.files))
    if not paths:
        raise SystemExit(f"no files match {args.files}")
    texts = [text for path in paths
             for text in pq.read_table(path, columns=["text"])["text"].to_pylist() if text]
    total_mb = sum(len(text.encode("utf-8")) for text in texts) / 1e6
    print(f"corpus: {len(paths)} files, {len(texts):,} documents, {sum(map(len, texts)):,} chars, "
          f"{total_mb:.1f} MB; cores: {os.cpu_count()}, threads: {args.threads}, vocab: {args.vocab_size}")

    started = time.perf_counter()
    spec = bpe.train_tokenizer(bpe.capped_texts([texts], bpe.DEFAULT_MAX_CHARS), args.vocab_size)
    train_seconds = time.perf_counter() - started
    # the MB of the text actually handed to the trainer (documents are cut at DOCUMENT_CHARS)
    train_mb = sum(len(text[: bpe.DOCUMENT_CHARS].encode("utf-8")) for text in texts) / 1e6

    encoding = spec.encoding()
    started = time.perf_counter()
    encoded = encoding.encode_ordinary_batch(texts, num_threads=args.threads)
    encode_seconds = time.perf_counter() - started
    n_tokens = sum(map(len, encoded))
    del encoded

    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        writer = SplitWriter(Path(scratch), "train", encoding, spec.bos_id,
                             layout.token_dtype(spec.vocab_size), threads=args.threads)
        for text in texts:
            writer.add(text)
        writer.close()
        write_seconds = time.perf_counter() - started

    print(f"{'step':<14}{'MB':>8}{'seconds':>10}{'MB/s':>9}")
    print(f"{'train':<14}{train_mb:>8.1f}{train_seconds:>10.2f}{train_mb / train_seconds:>9.2f}")
    print(f"{'encode':<14}{total_mb:>8.1f}{encode_seconds:>10.2f}{total_mb / encode_seconds:>9.2f}")
    print(f"{'encode+write':<14}{total_mb:>8.1f}{write_seconds:>10.2f}{total_mb / write_seconds:>9.2f}")
    print(f"tokens: {n_tokens:,} ({total_mb * 1e6 / n_tokens:.2f} bytes/token); "
          f"learned vocab {spec.vocab_size:,}")


if __name__ == "__main__":
    main()
