"""Where the text comes from: `--dataset climbmix | tinystories | sample | <path or glob>`.

Each source turns into a list of `Part`s: one input file (or generated stream) whose documents
all go to one split, or (split None) are assigned per document by `split.assign_splits`.

- climbmix: parquet shards of the HF dataset karpathy/climbmix-400b-shuffle (`shard_00000` ..
  `shard_06542`, column `text`). Shards 0..N-1 are train; the last shard is pinned as val and
  the one before it as holdout, as in the reference. `last_shard` is a parameter so tests can
  serve a handful of shards.
- tinystories: the single file `tinystories_gpt4_clean.parquet` of the HF dataset
  karpathy/tinystories-gpt4-clean (column `text`), split per document.
- sample: procedurally generated stories (see `sample`), no network, split per document.
- a path: a directory (searched recursively, hidden entries skipped), a file, or a glob of
  .txt / .md / .jsonl / .parquet files (see `readers`), split per document.

`identity()` is what the built dataset depends on; `prepare` compares it with the manifest to
skip work that is already done. The download host is deliberately not part of it (a mirror
serves the same files).

What this does NOT protect against: files on the Hub changing under the same name (their
content hashes are recorded in the manifest, but not known in advance), and local files
changing while `prepare` reads them.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from autoresearch import contract
from autoresearch.data import sample
from autoresearch.data.download import RemoteFile, download_all
from autoresearch.data.progress import Reporter
from autoresearch.data.readers import DOCUMENT_SUFFIXES, read_documents
from autoresearch.errors import UserError

DEFAULT_BASE_URL = "https://huggingface.co"
CLIMBMIX_REPO = "karpathy/climbmix-400b-shuffle"
CLIMBMIX_LAST_SHARD = 6542  # shard_06542.parquet is the last one; it is the val shard
DEFAULT_NUM_SHARDS = 10
TINYSTORIES_REPO = "karpathy/tinystories-gpt4-clean"
TINYSTORIES_FILES = ("tinystories_gpt4_clean.parquet",)  # the whole dataset is this one file
NAMED_SOURCES = ("climbmix", "tinystories", "sample")


@dataclass(frozen=True)
class Part:
    """One stream of documents: a file, or a generator for the sample source."""

    label: str  # shown in messages and recorded in the manifest
    split: str | None  # every document goes here; None: assigned per document
    path: Path | None = None
    generate: Callable[[], Iterator[list[str]]] | None = field(default=None, compare=False)
    downloaded: bool = False  # a corrupt downloaded file is deleted so that a rerun fetches it again

    def documents(self) -> Iterator[list[str]]:
        if self.generate is not None:
            return self.generate()
        return read_documents(self.path, delete_if_corrupt=self.downloaded)


class Source(Protocol):
    kind: str
    default_name: str
    splits_by_document: bool  # False: every file is pinned to a split

    def identity(self) -> dict: ...

    def fetch(self, reporter: Reporter) -> list[Part]: ...


def base_url_from(explicit: str | None) -> str:
    """--base-url, else $AUTORESEARCH_BASE_URL, else huggingface.co; no trailing slash."""
    url = explicit or os.environ.get(contract.ENV_BASE_URL) or DEFAULT_BASE_URL
    if not re.match(r"^https?://[^/]+", url):
        raise UserError(f"--base-url {url!r} is not an http(s) URL; use e.g. {DEFAULT_BASE_URL}")
    return url.rstrip("/")


def hub_url(base_url: str, repo: str, filename: str) -> str:
    return f"{base_url}/datasets/{repo}/resolve/main/{filename}"


@dataclass
class ClimbMixSource:
    num_shards: int = DEFAULT_NUM_SHARDS
    base_url: str = DEFAULT_BASE_URL
    last_shard: int = CLIMBMIX_LAST_SHARD
    downloads: Path = field(default_factory=contract.downloads_dir)
    kind: str = "climbmix"
    default_name: str = "climbmix"
    splits_by_document: bool = False

    def __post_init__(self) -> None:
        most = self.last_shard - 1  # the last two shards are val and holdout
        if not 1 <= self.num_shards <= most:
            raise UserError(f"--num-shards {self.num_shards} is out of range; use 1 to {most:,} "
                            f"(the last two shards are reserved for val and holdout)")

    def shards(self) -> dict[str, list[int]]:
        return {"train": list(range(self.num_shards)), "val": [self.last_shard],
                "holdout": [self.last_shard - 1]}

    def identity(self) -> dict:
        return {"kind": self.kind, "repo": CLIMBMIX_REPO, "shards": self.shards()}

    def fetch(self, reporter: Reporter) -> list[Part]:
        wanted = [(split, f"shard_{index:05d}.parquet") for split, indices in self.shards().items()
                  for index in indices]
        remote = [RemoteFile(hub_url(self.base_url, CLIMBMIX_REPO, filename), filename)
                  for _, filename in wanted]
        paths = download_all(remote, self.downloads / self.kind, reporter)
        return [Part(label=filename, split=split, path=path, downloaded=True)
                for (split, filename), path in zip(wanted, paths, strict=True)]


@dataclass
class TinyStoriesSource:
    base_url: str = DEFAULT_BASE_URL
    downloads: Path = field(default_factory=contract.downloads_dir)
    kind: str = "tinystories"
    default_name: str = "tinystories"
    splits_by_document: bool = True

    def identity(self) -> dict:
        return {"kind": self.kind, "repo": TINYSTORIES_REPO, "files": list(TINYSTORIES_FILES)}

    def fetch(self, reporter: Reporter) -> list[Part]:
        remote = [RemoteFile(hub_url(self.base_url, TINYSTORIES_REPO, name), name)
                  for name in TINYSTORIES_FILES]
        paths = download_all(remote, self.downloads / self.kind, reporter)
        return [Part(label=path.name, split=None, path=path, downloaded=True) for path in paths]


@dataclass
class SampleSource:
    seed: int = sample.DEFAULT_SEED
    target_chars: int = sample.DEFAULT_TARGET_CHARS
    kind: str = "sample"
    default_name: str = "sample"
    splits_by_document: bool = True

    def identity(self) -> dict:
        return {"kind": self.kind, "generator_version": sample.GENERATOR_VERSION, "seed": self.seed,
                "target_chars": self.target_chars}

    def fetch(self, reporter: Reporter) -> list[Part]:
        return [Part(label=f"sample-stories-seed{self.seed}", split=None,
                     generate=lambda: sample.generate_stories(self.seed, self.target_chars))]


class LocalSource:
    """Files on disk: a directory, a single file, or a glob pattern."""

    kind = "local"
    splits_by_document = True

    def __init__(self, spec: str):
        self.spec = spec
        self.root, self.files = _find_local_files(spec)
        single_file = not _is_glob(spec) and Path(spec).expanduser().is_file()
        self.default_name = _safe_name(Path(spec).stem if single_file else self.root.name)

    def identity(self) -> dict:
        return {"kind": self.kind, "path": str(self.root),
                "files": [{"file": self._label(path), "bytes": path.stat().st_size, "sha256": _sha256(path)}
                          for path in self.files]}

    def fetch(self, reporter: Reporter) -> list[Part]:
        return [Part(label=self._label(path), split=None, path=path) for path in self.files]

    def _label(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def resolve_source(spec: str, *, num_shards: int = DEFAULT_NUM_SHARDS, base_url: str | None = None,
                   last_shard: int = CLIMBMIX_LAST_SHARD, downloads: Path | None = None,
                   sample_chars: int = sample.DEFAULT_TARGET_CHARS) -> Source:
    downloads = downloads or contract.downloads_dir()
    if spec == "climbmix":
        return ClimbMixSource(num_shards, base_url_from(base_url), last_shard, downloads)
    if spec == "tinystories":
        return TinyStoriesSource(base_url_from(base_url), downloads)
    if spec == "sample":
        return SampleSource(target_chars=sample_chars)
    return LocalSource(spec)


def _is_glob(spec: str) -> bool:
    return any(char in spec for char in "*?[")


def _find_local_files(spec: str) -> tuple[Path, list[Path]]:
    """(root, files): files sorted by their path relative to root, which labels them (for a glob,
    root is the directory before the first wildcard)."""
    expanded = os.path.expanduser(spec)
    if _is_glob(spec):
        files = sorted(Path(match).resolve() for match in glob.glob(expanded, recursive=True)
                       if Path(match).is_file() and Path(match).suffix.lower() in DOCUMENT_SUFFIXES)
        if not files:
            raise UserError(f"--dataset {spec!r}: the pattern matches no .txt, .md, .jsonl or .parquet file")
        fixed_parts = []
        for part in Path(expanded).parts:
            if _is_glob(part):
                break
            fixed_parts.append(part)
        root = Path(*fixed_parts).resolve() if fixed_parts else Path.cwd()
        return root, sorted(files, key=lambda file: file.relative_to(root).as_posix())
    path = Path(expanded)
    if not path.exists():
        raise UserError(f"--dataset {spec!r} is neither a known source ({', '.join(NAMED_SOURCES)}) nor an "
                        f"existing file or directory")
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() not in DOCUMENT_SUFFIXES:
            raise UserError(f"{path}: unsupported file type; use {', '.join(DOCUMENT_SUFFIXES)}")
        return path.parent, [path]
    files = sorted((candidate for candidate in path.rglob("*")
                    if candidate.is_file() and candidate.suffix.lower() in DOCUMENT_SUFFIXES
                    and not any(part.startswith(".") for part in candidate.relative_to(path).parts)),
                   key=lambda candidate: candidate.relative_to(path).as_posix())
    if not files:
        raise UserError(f"{path}: no .txt, .md, .jsonl or .parquet files in this directory")
    return path, files


def _safe_name(raw: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-._")
    return name or "local"


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """sha256 of a file, remembered for this process while its size and mtime are unchanged."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def file_fingerprint(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}
