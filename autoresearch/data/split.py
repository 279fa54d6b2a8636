"""Assign documents to train / val / holdout by a stable hash of their text.

Used for sources that do not come pre-split (a local folder, TinyStories, the sample stories).
Every document gets a 64-bit key, blake2b of its UTF-8 text. The documents with the smallest
keys form val (about `val_fraction` of them, at least one), the next smallest form holdout, the
rest train. Consequences worth knowing:

- the assignment depends only on the documents, not on the machine, the file order or Python's
  hash seed, so a rebuild gives the same splits;
- identical documents get identical keys and so always land in the same split: an exact
  duplicate can never leak from train into val or holdout (near-duplicates can);
- adding documents to a corpus moves few existing ones between splits.

What this does NOT protect against: near-duplicate documents, and topic overlap between the
splits (they are random samples of one corpus, by design).
"""

from __future__ import annotations

import hashlib

import numpy as np

from autoresearch.errors import UserError

TRAIN, VAL, HOLDOUT = 0, 1, 2  # codes, in the order of contract.SPLITS
MIN_DOCUMENTS = 10  # fewer cannot give train, val and holdout each something meaningful
DEFAULT_VAL_FRACTION = 0.05
DEFAULT_HOLDOUT_FRACTION = 0.05
_PERSON = b"autoresearch"


def document_key(text: str) -> int:
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "little")


def check_fractions(val_fraction: float, holdout_fraction: float) -> None:
    for option, value in (("--val-fraction", val_fraction), ("--holdout-fraction", holdout_fraction)):
        if not 0.0 < value <= 0.25:
            raise UserError(f"{option} {value} is out of range; use a fraction above 0 and at most 0.25 "
                            f"(default 0.05)")


def assign_splits(keys: np.ndarray, val_fraction: float, holdout_fraction: float, where: str) -> np.ndarray:
    """Split codes (uint8, TRAIN / VAL / HOLDOUT) for documents with the given keys."""
    keys = np.asarray(keys, dtype=np.uint64)
    n = len(keys)
    if n < MIN_DOCUMENTS:
        raise UserError(f"{where} has {n} document(s); at least {MIN_DOCUMENTS} are needed to fill train, "
                        f"val and holdout: add more text")
    n_val = max(1, round(val_fraction * n))
    n_holdout = max(1, round(holdout_fraction * n))
    ordered = np.sort(keys)
    val_limit = ordered[n_val - 1]
    codes = np.full(n, TRAIN, dtype=np.uint8)
    codes[keys <= val_limit] = VAL
    rest = ordered[ordered > val_limit]
    if len(rest):
        holdout_limit = rest[min(n_holdout, len(rest)) - 1]
        codes[(keys > val_limit) & (keys <= holdout_limit)] = HOLDOUT
    counts = np.bincount(codes, minlength=3)
    if counts.min() == 0:
        raise UserError(f"{where} has too few distinct documents ({len(np.unique(keys))}) to fill train, "
                        f"val and holdout: add more (different) text")
    return codes
