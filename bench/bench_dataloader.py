"""Throughput of prepare.py's dataloader: tokens/s of the best-fit packer and of the full iterator.

    python bench/bench_dataloader.py [--batches 40] [--B 128] [--T 2048] [--rebuild]

It builds (once, cached under $TMPDIR/autoresearch-bench-dataloader) two datasets in the real
on-disk format from the docs corpus in ../shared/data/docs-corpus: a BPE tokenizer with vocab 8192
trained with rustbpe on the first 10 M characters, then every train document encoded with
tiktoken. "documents" keeps one document per row of the parquet files (median ~700 tokens, a long
tail past 2048); "paragraphs" splits them at blank lines (many short documents: the worst case
for the packer, which pays per document).

Measured on ONE CPU thread for torch (torch.set_num_threads(1)); each number is the best of
--rounds rounds (the machine may be shared):
  baseline    the same best-fit rule written the straightforward way (a linear scan of a list of
              documents per choice, one slice copy per document), for comparison
  packer      BestFitPacker.fill alone, in this thread
  iterator    next() on make_dataloader(device="cpu"), packing in its background thread; the
              consumer does nothing else, so this is the rate the thread sustains (with the
              CPU time per batch, both threads together)
It also reports the fraction of the split's tokens that reach rows in one epoch (the rest is the
documented crop).

It does not measure CUDA host-to-device copies (no GPU here) or contention with a training step.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS = REPO_ROOT.parent / "shared" / "data" / "docs-corpus"
VOCAB_SIZE = 8192


def build_datasets(root: Path) -> dict[str, Path]:
    """Two datasets ("documents", "paragraphs") sharing one tokenizer; reused when present."""
    import pyarrow.parquet as pq
    import rustbpe

    sys.path.insert(0, str(REPO_ROOT))
    from autoresearch.data import layout

    targets = {"documents": root / "documents", "paragraphs": root / "paragraphs"}
    if all((path / layout.MANIFEST).is_file() for path in targets.values()):
        return targets
    started = time.perf_counter()
    texts = {}
    for split, pattern in (("train", "train_*.parquet"), ("val", "val_*.parquet")):
        texts[split] = []
        for shard in sorted(CORPUS.glob(pattern)):
            texts[split] += pq.read_table(shard, columns=["text"]).column("text").to_pylist()
    sample, n_chars = [], 0
    for text in texts["train"]:
        sample.append(text)
        n_chars += len(text)
        if n_chars > 10_000_000:
            break
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(sample), VOCAB_SIZE - len(layout.SPECIAL_TOKENS))
    ranks = [token for token, _ in sorted(trainer.get_mergeable_ranks(), key=lambda pair: pair[1])]
    spec = layout.TokenizerSpec(pattern=trainer.get_pattern(), ranks=ranks,
                                special_tokens=layout.special_token_ids(len(ranks)))
    encoding = spec.encoding()
    dtype = layout.token_dtype(spec.vocab_size)
    encoded = {split: encoding.encode_ordinary_batch(docs, num_threads=os.cpu_count() or 1)
               for split, docs in texts.items()}
    for name, path in targets.items():
        path.mkdir(parents=True, exist_ok=True)
        layout.write_tokenizer(path, spec)
        manifest = {"name": name, "vocab_size": spec.vocab_size, "bos_id": spec.bos_id,
                    "token_dtype": dtype.name, "splits": {}}
        for split in ("train", "val"):
            if name == "documents":
                docs = encoded[split]
            else:
                paragraphs = [p for text in texts[split] for p in text.split("\n\n") if p.strip()]
                docs = encoding.encode_ordinary_batch(paragraphs, num_threads=os.cpu_count() or 1)
            n_docs, n_tokens = layout.write_split(path, split, docs, spec.bos_id, dtype)
            manifest["splits"][split] = {"documents": n_docs, "tokens": n_tokens}
        layout.write_split(path, "holdout", encoded["val"][:10], spec.bos_id, dtype)
        (path / layout.MANIFEST).write_text(json.dumps(manifest, indent=2))
    print(f"built bench datasets in {time.perf_counter() - started:.1f}s under {root}")
    return targets


def load_prepare(data_dir: Path):
    os.environ["AUTORESEARCH_DATA_DIR"] = str(data_dir)
    sys.path.insert(0, str(REPO_ROOT))
    import prepare

    return importlib.reload(prepare)


def best_rate(step, tokens_per_step: int, steps: int, rounds: int) -> float:
    """Best tokens/s over `rounds` rounds of `steps` calls of step()."""
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * tokens_per_step / (time.perf_counter() - started))
    return max(rates)


def bench_baseline(tokens: np.ndarray, doc_starts: np.ndarray, B: int, T: int, batches: int,
                   rounds: int) -> float:
    """Best-fit with a linear scan over a list of documents (arrays), as a simple loader would."""
    tokens = np.asarray(tokens)
    order = np.random.default_rng(0).permutation(len(doc_starts) - 1)
    stream = (tokens[doc_starts[i] : doc_starts[i + 1]] for i in np.tile(order, 1000))
    documents = [next(stream) for _ in range(1000)]
    rows = np.empty((B, T + 1), dtype=np.int64)

    def one_batch() -> None:
        for row in rows:
            pos = 0
            while pos < T + 1:
                space = T + 1 - pos
                best, best_len = -1, 0
                for i, doc in enumerate(documents):
                    if best_len < len(doc) <= space:
                        best, best_len = i, len(doc)
                if best >= 0:
                    doc = documents.pop(best)
                    row[pos : pos + len(doc)] = doc
                    pos += len(doc)
                else:
                    shortest = min(range(len(documents)), key=lambda i: len(documents[i]))
                    row[pos:] = documents.pop(shortest)[:space]
                    pos = T + 1
                documents.append(next(stream))

    return best_rate(one_batch, B * (T + 1), max(1, batches // 8), rounds)


def bench_packer(prepare, B: int, T: int, batches: int, rounds: int) -> dict:
    tokens, doc_starts = prepare._open_split(prepare.DATA_DIR, "train")
    packer = prepare.BestFitPacker(tokens, doc_starts, T + 1, seed=prepare.SEED)
    rows = np.empty((B, T + 1), dtype=tokens.dtype)
    packer.fill(rows)  # warm up: page the memmap in
    docs_before = packer.docs_packed
    rate = best_rate(lambda: packer.fill(rows), B * (T + 1), batches, rounds)
    docs_per_batch = (packer.docs_packed - docs_before) / (batches * rounds)
    # tokens that reach rows over exactly one epoch, from a fresh packer
    fresh = prepare.BestFitPacker(tokens, doc_starts, T + 1, seed=prepare.SEED)
    n_rows = 0
    while fresh.epoch == 1:
        fresh.fill(rows[:1])
        n_rows += 1
    return {"tokens_per_s": rate, "docs_per_batch": docs_per_batch,
            "baseline_tokens_per_s": bench_baseline(tokens, doc_starts, B, T, batches, rounds),
            "epoch_token_use": n_rows * (T + 1) / len(tokens),
            "split_tokens": len(tokens), "split_docs": len(doc_starts) - 1}


def bench_iterator(prepare, B: int, T: int, batches: int, rounds: int) -> tuple[float, float]:
    """(best tokens/s, CPU milliseconds per batch over both threads)."""
    tokenizer = prepare.Tokenizer.from_directory()
    loader = prepare.make_dataloader(tokenizer, B, T, "train", device="cpu")
    next(loader)
    cpu_started = time.process_time()
    rate = best_rate(lambda: next(loader), B * T, batches, rounds)
    cpu_ms = (time.process_time() - cpu_started) * 1e3 / (batches * rounds)
    loader.close()
    return rate, cpu_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--B", type=int, default=128)
    parser.add_argument("--T", type=int, default=2048)
    parser.add_argument("--batches", type=int, default=20, help="batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    root = Path(tempfile.gettempdir()) / "autoresearch-bench-dataloader"
    if args.rebuild and root.exists():
        import shutil

        shutil.rmtree(root)
    datasets = build_datasets(root)
    print(f"B={args.B} T={args.T} batches={args.batches} x {args.rounds} rounds, "
          f"torch threads={torch.get_num_threads()} (+1 packing thread for the iterator)")
    for name, path in datasets.items():
        prepare = load_prepare(path)
        packer = bench_packer(prepare, args.B, args.T, args.batches, args.rounds)
        iterator, cpu_ms = bench_iterator(prepare, args.B, args.T, args.batches, args.rounds)
        print(f"{name:>10}: {packer['split_docs']:,} docs, {packer['split_tokens'] / 1e6:.1f} M tokens, "
              f"{packer['docs_per_batch']:.0f} docs/batch, one epoch uses {packer['epoch_token_use']:.1%}"
              " of the split's tokens")
        print(f"{'':>10}  baseline {packer['baseline_tokens_per_s'] / 1e6:6.1f} M tok/s | packer "
              f"{packer['tokens_per_s'] / 1e6:6.1f} M tok/s | iterator {iterator / 1e6:6.1f} M tok/s "
              f"({cpu_ms:.1f} ms CPU per batch, both threads)")


if __name__ == "__main__":
    main()
