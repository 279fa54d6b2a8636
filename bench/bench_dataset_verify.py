"""Cost of checking a dataset's hashes at run start (issue 9, item 6), with and without the cache.

    python bench/bench_dataset_verify.py [--gigabytes 1.5] [--repeats 3]

The dataset: the docs corpus (../shared/data/docs-corpus, or $AUTORESEARCH_SHARED_DATA/docs-corpus)
prepared for real (`prepare_dataset` on its parquet files, vocab 2048), then SCALED: its train.bin
is repeated (and train.docs.npy extended to match) until the dataset holds --gigabytes, and the
manifest is sealed again, so verification has that many bytes to hash. The default 1.5 GB is
near an estimate of the climbmix default (10 train shards + val + holdout): its shards hold about
250 M characters each (karpathy/nanochat, dev/repackage_data_reference.py); at the docs corpus's
3.34 characters a token at vocab 8192 (bench/RESULTS.md: 61.5 M characters, 18.4 M tokens) that is
about 75 M tokens, 150 MB at 2 bytes a token, so about 1.8 GB for 12 shards (an estimate, not a
measurement of climbmix).

Timed, best of --repeats (the files are in the page cache after the first read; the cold-disk
case is not measured, it would need dropping the machine's caches):
  sizes_only        verify_dataset(check_hashes=False): what a run start did before
  hashes_no_cache   verify_dataset(): every byte hashed
  hashes_cached     verify_dataset(hash_cache=...) after one verification: stat calls only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from autoresearch.data import layout
from autoresearch.data.build import prepare_dataset
from autoresearch.data.manifest import FORMAT_VERSION, seal_dataset, verify_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("AUTORESEARCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "docs-corpus"


def scale_train_split(dataset: Path, target_bytes: int) -> None:
    """Repeat train.bin until the dataset holds about target_bytes; reseal the manifest."""
    manifest = json.loads((dataset / layout.MANIFEST).read_text())
    dtype = np.dtype(manifest["token_dtype"])
    tokens = np.fromfile(layout.bin_path(dataset, "train"), dtype=dtype)
    starts = np.load(layout.docs_path(dataset, "train"))
    others = sum(path.stat().st_size for path in dataset.iterdir() if path.name != "train.bin")
    copies = max(1, -(-(target_bytes - others) // tokens.nbytes))
    with open(layout.bin_path(dataset, "train"), "wb") as sink:
        for _ in range(copies):
            tokens.tofile(sink)
    lengths = np.tile(np.diff(starts), copies)
    new_starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_starts[1:])
    np.save(layout.docs_path(dataset, "train"), new_starts)
    manifest["splits"]["train"].update(documents=len(lengths), tokens=int(new_starts[-1]))
    body = {key: value for key, value in manifest.items() if key not in ("files", "format_version")}
    seal_dataset(dataset, body)


def best_of(repeats: int, run) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not CORPUS.is_dir():
        sys.exit(f"error: the docs corpus is not at {CORPUS} (set AUTORESEARCH_SHARED_DATA)")
    scratch = Path(tempfile.mkdtemp(prefix="autoresearch-bench-verify-"))
    try:
        dataset = prepare_dataset(str(CORPUS / "*.parquet"), name="docs", vocab_size=2048, show_progress=False,
                                  cache_dir=scratch / "cache")
        scale_train_split(dataset, int(args.gigabytes * 1e9))
        total = sum(path.stat().st_size for path in dataset.iterdir())
        cache = scratch / "verified.json"
        verify_dataset(dataset)  # reads every file once: the timings below start from the page cache
        timings = {
            "sizes_only_s": best_of(args.repeats, lambda: verify_dataset(dataset, check_hashes=False)),
            "hashes_no_cache_s": best_of(args.repeats, lambda: verify_dataset(dataset)),
        }
        verify_dataset(dataset, hash_cache=cache)
        timings["hashes_cached_s"] = best_of(args.repeats, lambda: verify_dataset(dataset, hash_cache=cache))
        print(json.dumps({"format_version": FORMAT_VERSION, "dataset_bytes": total,
                          "hash_throughput_MB_s": round(total / 1e6 / timings["hashes_no_cache_s"], 1),
                          **{name: round(seconds, 4) for name, seconds in timings.items()}}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
