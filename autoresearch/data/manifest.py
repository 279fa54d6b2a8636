"""The dataset manifest: what was built from what, and the hashes that prove the files are intact.

`seal_dataset` hashes every data file of a dataset directory and writes `manifest.json` LAST
(through a temporary file and os.replace), so a directory with a manifest is complete. The
manifest holds no timestamps, host names or absolute temporary paths: the same inputs and
parameters give a byte-identical manifest. `verify_dataset` is what every consumer calls before
using a dataset; it turns any missing, incomplete or altered file into a one-line UserError.

Hashing reads every byte (see bench/RESULTS.md for the cost on a climbmix-sized dataset), so a
run start passes a `hash_cache`: a small JSON file (under the cache directory, not the dataset)
remembering the sha256 this process computed for each file together with the file's size,
mtime, ctime, inode and device. A file whose stat is unchanged is not read again; its remembered
digest is still compared with the manifest read afresh, so an edited manifest is caught at once.
ctime is set by the kernel on every write and cannot be restored with os.utime, so an edit that
restores size and mtime still gets the file re-read.

What this does NOT protect against: someone who edits a data file and rewrites the manifest's
hash to match (sha256 here detects accidents, not attacks); changes to a file after it was
verified; and, with the cache, a change that also restores ctime (changing the system clock, or
writing to the raw block device).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from autoresearch import contract
from autoresearch.atomic import write_json_atomic
from autoresearch.data import layout
from autoresearch.errors import UserError

# 2: the reference's tokenizer recipe (four special tokens, 1 B training characters) and byte
#    counts (UTF-8 of each decoded token). Format-1 datasets are refused; `prepare` rebuilds them.
FORMAT_VERSION = 2
REQUIRED_KEYS = ("format_version", "vocab_size", "bos_id", "token_dtype", "splits", "files")


def data_files(dataset_dir: Path) -> list[str]:
    """Names of the files a complete dataset holds, besides the manifest."""
    names = [layout.TOKENIZER, layout.TOKEN_BYTES]
    for split in contract.SPLITS:
        names += [layout.bin_path(dataset_dir, split).name, layout.docs_path(dataset_dir, split).name]
    return names


def file_sha256(path: Path, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def seal_dataset(dataset_dir: Path, manifest: dict) -> dict:
    """Add `format_version` and the `files` hashes to `manifest`, write it last and atomically.

    `manifest` must already hold vocab_size, bos_id, token_dtype and splits (per split at least
    documents and tokens). Returns the manifest as written.
    """
    dataset_dir = Path(dataset_dir)
    sealed = {"format_version": FORMAT_VERSION, **manifest}
    sealed["files"] = {name: {"bytes": (dataset_dir / name).stat().st_size,
                              "sha256": file_sha256(dataset_dir / name)}
                       for name in data_files(dataset_dir)}
    write_json_atomic(dataset_dir / layout.MANIFEST, sealed)
    return sealed


def default_hash_cache(dataset_dir: Path) -> Path:
    """Where a run start remembers the digests it computed for `dataset_dir`."""
    key = hashlib.sha256(str(Path(dataset_dir).resolve()).encode("utf-8")).hexdigest()[:16]
    return contract.cache_dir() / "verified" / f"{key}.json"


_CACHE_VERSION = 1


def _stat_key(path: Path) -> list[int]:
    """What must be unchanged for a remembered digest to still describe the file."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def _read_hash_cache(cache: Path, dataset_dir: Path) -> dict[str, dict]:
    try:
        payload = json.loads(Path(cache).read_text())
    except (OSError, ValueError):
        return {}  # absent or torn: everything is hashed again
    if not isinstance(payload, dict) or payload.get("version") != _CACHE_VERSION:
        return {}
    if payload.get("dataset") != str(Path(dataset_dir).resolve()) or not isinstance(payload.get("files"), dict):
        return {}
    return payload["files"]


class _Digests:
    """sha256 of the dataset's files, read from disk or from a cache keyed by each file's stat."""

    def __init__(self, dataset_dir: Path, cache: Path | None):
        self.dataset_dir = Path(dataset_dir)
        self.cache = cache
        self.remembered = _read_hash_cache(cache, dataset_dir) if cache is not None else {}
        self.now: dict[str, dict] = {}

    def of(self, name: str) -> str:
        path = self.dataset_dir / name
        key = _stat_key(path)
        entry = self.remembered.get(name)
        if not (isinstance(entry, dict) and entry.get("stat") == key and isinstance(entry.get("sha256"), str)):
            entry = {"stat": key, "sha256": file_sha256(path)}
            if _stat_key(path) != key:  # written to while we read it: do not remember a torn digest
                raise UserError(f"{path} changed while it was being verified; try again")
        self.now[name] = entry
        return entry["sha256"]

    def save(self) -> None:
        if self.cache is None or self.now == self.remembered:
            return
        try:
            Path(self.cache).parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(Path(self.cache), {"version": _CACHE_VERSION,
                                                 "dataset": str(self.dataset_dir.resolve()), "files": self.now})
        except OSError:  # a read-only cache directory: verification still happened, it is just not remembered
            pass


def check_format(dataset_dir: Path, manifest: dict) -> None:
    """A UserError unless the manifest is of the format this version reads (old ones are never mixed in)."""
    found = manifest.get("format_version")
    if found != FORMAT_VERSION:
        raise UserError(f"dataset {dataset_dir} has format {found}, this version reads {FORMAT_VERSION} "
                        f"(tokenizer, byte counts and validation rows follow the reference since format 2); "
                        f"run `{rebuild_command(dataset_dir, manifest)}` to rebuild it")


def rebuild_command(dataset_dir: Path, manifest: dict) -> str:
    """The prepare command that rebuilds this dataset from the source it was built from."""
    source = (manifest.get("parameters") or {}).get("source") or {}
    spec = source.get("path") if source.get("kind") == "local" else source.get("kind")
    dataset = f" --dataset {spec}" if spec and spec != contract.DEFAULT_DATASET else ""  # climbmix: the default
    return f"autoresearch prepare{dataset} --name {Path(dataset_dir).name} --force"


def verify_dataset(dataset_dir: Path, check_hashes: bool = True, hash_cache: Path | None = None) -> dict:
    """The manifest of a complete, intact dataset; a UserError naming the problem otherwise.

    With `check_hashes=False` only sizes and the document index are checked (fast on big data).
    With a `hash_cache` file, digests of files whose stat is unchanged since they were last
    hashed are taken from it (and it is updated); they are compared with the manifest either way.
    """
    dataset_dir = Path(dataset_dir)
    rerun = f"run `autoresearch prepare --name {dataset_dir.name} --force` to rebuild it"
    if not dataset_dir.is_dir():
        raise UserError(f"no prepared dataset at {dataset_dir}; run `autoresearch prepare` first "
                        f"(or set --cache-dir / AUTORESEARCH_CACHE_DIR to where it lives)")
    try:
        manifest = layout.read_manifest(dataset_dir)
    except (OSError, ValueError) as error:
        raise UserError(f"{dataset_dir / layout.MANIFEST}: unreadable ({error}); {rerun}") from None
    if manifest is None:
        raise UserError(f"dataset {dataset_dir} is incomplete (no {layout.MANIFEST}); {rerun}")
    missing_keys = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing_keys:
        raise UserError(f"{dataset_dir / layout.MANIFEST} lacks {', '.join(missing_keys)}; {rerun}")
    check_format(dataset_dir, manifest)
    digests = _Digests(dataset_dir, hash_cache if check_hashes else None)
    for name in data_files(dataset_dir):
        path = dataset_dir / name
        recorded = manifest["files"].get(name)
        if recorded is None:
            raise UserError(f"{dataset_dir / layout.MANIFEST} does not list {name}; {rerun}")
        if not path.is_file():
            raise UserError(f"dataset {dataset_dir} is incomplete: {name} is missing; {rerun}")
        if path.stat().st_size != recorded["bytes"]:
            raise UserError(f"{path} has {path.stat().st_size} bytes, the manifest says {recorded['bytes']} "
                            f"(corrupt or truncated); {rerun}")
        if check_hashes and digests.of(name) != recorded.get("sha256"):
            digests.save()  # what was read stays known: the next check reads only what changes
            raise UserError(f"{path} does not match its sha256 in the manifest (corrupt); {rerun}")
    itemsize = np.dtype(manifest["token_dtype"]).itemsize
    for split in contract.SPLITS:
        counts = manifest["splits"].get(split)
        if counts is None:
            raise UserError(f"{dataset_dir / layout.MANIFEST} has no {split!r} split; {rerun}")
        doc_starts = np.load(layout.docs_path(dataset_dir, split))
        tokens = layout.bin_path(dataset_dir, split).stat().st_size // itemsize
        consistent = (len(doc_starts) == counts["documents"] + 1 and int(doc_starts[-1]) == tokens
                      and tokens == counts["tokens"])
        if not consistent:
            raise UserError(f"{layout.docs_path(dataset_dir, split)} does not match {split}.bin and the "
                            f"manifest; {rerun}")
    digests.save()
    return manifest
