"""Shared fixtures: a redirected cache directory and a tiny prepared dataset built on the spot."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from autoresearch import contract
from autoresearch.data import layout

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test touches the user's real cache or selects their datasets."""
    monkeypatch.setenv(contract.ENV_CACHE_DIR, str(tmp_path_factory.mktemp("cache")))
    for name in (contract.ENV_DATASET, contract.ENV_DATA_DIR, contract.ENV_BASE_URL, "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def _toy_documents(n_docs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names = ["Ada", "Bo", "Cyd", "Dee", "Eli", "Fay"]
    things = ["apple", "kite", "boat", "lamp", "drum", "map"]
    verbs = ["found", "lost", "gave away", "painted", "fixed"]
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(rng.randint(2, 8)):
            who, what, verb = rng.choice(names), rng.choice(things), rng.choice(verbs)
            sentences.append(f"{who} {verb} the {what}. Then {who} was happy about the {what}.")
        docs.append(" ".join(sentences))
    return docs


def build_tiny_dataset(dataset_dir: Path, vocab_size: int = 320, n_docs: int = 400, seed: int = 0) -> Path:
    """A complete dataset in the real format, small enough to build in a second."""
    import rustbpe

    dataset_dir.mkdir(parents=True, exist_ok=True)
    docs = _toy_documents(n_docs, seed)
    n_eval = max(8, n_docs // 10)
    splits = {"train": docs[: n_docs - 2 * n_eval], "val": docs[-2 * n_eval : -n_eval], "holdout": docs[-n_eval:]}
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(splits["train"]), vocab_size - len(layout.SPECIAL_TOKENS))
    ranks = [token for token, _ in sorted(trainer.get_mergeable_ranks(), key=lambda pair: pair[1])]
    spec = layout.TokenizerSpec(pattern=trainer.get_pattern(), ranks=ranks,
                                special_tokens=layout.special_token_ids(len(ranks)))
    layout.write_tokenizer(dataset_dir, spec)
    encoding = spec.encoding()
    dtype = layout.token_dtype(spec.vocab_size)
    manifest = {"name": dataset_dir.name, "vocab_size": spec.vocab_size, "bos_id": spec.bos_id,
                "token_dtype": dtype.name, "splits": {}}
    for split, texts in splits.items():
        n, t = layout.write_split(dataset_dir, split, [encoding.encode_ordinary(x) for x in texts], spec.bos_id, dtype)
        manifest["splits"][split] = {"documents": n, "tokens": t}
    from autoresearch.data.manifest import seal_dataset

    seal_dataset(dataset_dir, manifest)
    return dataset_dir


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A tiny prepared dataset (vocab 320, a few hundred toy stories), shared by the session."""
    return build_tiny_dataset(tmp_path_factory.mktemp("datasets") / "tiny")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
