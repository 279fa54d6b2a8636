"""The on-disk format of a prepared dataset: the single definition every reader and writer uses.

A dataset directory holds::

    manifest.json        written last; a dataset without it is incomplete and never used
    tokenizer.json       {"pattern", "special_tokens": {name: id}, "bos_token", "ranks": [base64 bytes]}
                         (the token with id i is ranks[i]; the four special tokens follow the
                         ranks, as in the reference: <|reserved_0|> .. <|reserved_3|>, BOS is
                         <|reserved_0|>)
    token_bytes.npy      int32[vocab_size]: each token's byte count for bits per byte, defined as
                         the reference defines it: the UTF-8 length of the token decoded on its
                         own (a partial UTF-8 sequence decodes to U+FFFD, 3 bytes); 0 for
                         special tokens
    <split>.bin          flat token ids (dtype from the manifest, uint16 while vocab <= 65536);
                         every document is BOS followed by its tokens
    <split>.docs.npy     int64[n_docs + 1]: where each document starts in <split>.bin; the last
                         entry is the total number of tokens

for each split in train, val, holdout. `prepare.py` reads the same files with its own few lines
(it must stay a standalone file); tests check that both readings agree.

This module reads and writes files; it does not verify hashes (see `manifest`).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
TOKEN_BYTES = "token_bytes.npy"
SPECIAL_TOKENS = tuple(f"<|reserved_{i}|>" for i in range(4))  # the reference's four
BOS_TOKEN = SPECIAL_TOKENS[0]


def special_token_ids(n_ranks: int) -> dict[str, int]:
    """The special tokens' ids: right after the last of `n_ranks` merges, in order."""
    return {name: n_ranks + offset for offset, name in enumerate(SPECIAL_TOKENS)}


def decoded_byte_length(token: bytes) -> int:
    """Bytes a token counts for in bits per byte: len(utf8(decode(token))), errors replaced.

    A complete UTF-8 piece counts its own bytes; a fragment of a multi-byte character decodes
    to U+FFFD replacement characters (3 bytes each), so it may count more or fewer than it holds.
    """
    return len(token.decode("utf-8", errors="replace").encode("utf-8"))


def bin_path(dataset_dir: Path, split: str) -> Path:
    return Path(dataset_dir) / f"{split}.bin"


def docs_path(dataset_dir: Path, split: str) -> Path:
    return Path(dataset_dir) / f"{split}.docs.npy"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything needed to rebuild the tiktoken encoding."""

    pattern: str
    ranks: list[bytes]  # ranks[i] is the byte string of token i
    special_tokens: dict[str, int]

    @property
    def vocab_size(self) -> int:
        return len(self.ranks) + len(self.special_tokens)

    @property
    def bos_id(self) -> int:
        return self.special_tokens[BOS_TOKEN]

    def encoding(self):
        import tiktoken

        return tiktoken.Encoding(
            name="autoresearch",
            pat_str=self.pattern,
            mergeable_ranks={token: rank for rank, token in enumerate(self.ranks)},
            special_tokens=dict(self.special_tokens),
        )

    def token_byte_lengths(self) -> np.ndarray:
        """`decoded_byte_length` of every token (the reference's token_bytes); 0 for special tokens."""
        lengths = np.zeros(self.vocab_size, dtype=np.int32)
        lengths[: len(self.ranks)] = [decoded_byte_length(token) for token in self.ranks]
        return lengths


def write_tokenizer(dataset_dir: Path, spec: TokenizerSpec) -> None:
    payload = {
        "pattern": spec.pattern,
        "bos_token": BOS_TOKEN,
        "special_tokens": spec.special_tokens,
        "ranks": [base64.b64encode(token).decode("ascii") for token in spec.ranks],
    }
    (Path(dataset_dir) / TOKENIZER).write_text(json.dumps(payload))
    np.save(Path(dataset_dir) / TOKEN_BYTES, spec.token_byte_lengths())


def read_tokenizer(dataset_dir: Path) -> TokenizerSpec:
    payload = json.loads((Path(dataset_dir) / TOKENIZER).read_text())
    return TokenizerSpec(
        pattern=payload["pattern"],
        ranks=[base64.b64decode(token) for token in payload["ranks"]],
        special_tokens={name: int(i) for name, i in payload["special_tokens"].items()},
    )


def read_token_bytes(dataset_dir: Path) -> np.ndarray:
    return np.load(Path(dataset_dir) / TOKEN_BYTES)


def read_split(dataset_dir: Path, split: str, dtype: np.dtype | str = "uint16") -> tuple[np.ndarray, np.ndarray]:
    """(tokens, doc_starts) of a split, the tokens memory-mapped read-only."""
    tokens = np.memmap(bin_path(dataset_dir, split), dtype=np.dtype(dtype), mode="r")
    doc_starts = np.load(docs_path(dataset_dir, split))
    return tokens, doc_starts


def write_split(dataset_dir: Path, split: str, documents: list[list[int]] | list[np.ndarray], bos_id: int,
                dtype: np.dtype | str = "uint16") -> tuple[int, int]:
    """Write documents (token ids without BOS) as one split; returns (n_docs, n_tokens)."""
    dtype = np.dtype(dtype)
    lengths = np.fromiter((len(doc) + 1 for doc in documents), dtype=np.int64, count=len(documents))
    doc_starts = np.zeros(len(documents) + 1, dtype=np.int64)
    np.cumsum(lengths, out=doc_starts[1:])
    flat = np.empty(int(doc_starts[-1]), dtype=dtype)
    for start, doc in zip(doc_starts[:-1], documents):
        flat[start] = bos_id
        flat[start + 1 : start + 1 + len(doc)] = doc
    flat.tofile(bin_path(dataset_dir, split))
    np.save(docs_path(dataset_dir, split), doc_starts)
    return len(documents), int(doc_starts[-1])


def read_manifest(dataset_dir: Path) -> dict | None:
    path = Path(dataset_dir) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())
