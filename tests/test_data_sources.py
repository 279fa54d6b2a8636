"""Source resolution, readers and the per-document split, without building a dataset."""

from __future__ import annotations

import numpy as np
import pytest

from autoresearch import contract
from autoresearch.data import readers, split
from autoresearch.data.sources import (
    ClimbMixSource,
    LocalSource,
    SampleSource,
    TinyStoriesSource,
    base_url_from,
    resolve_source,
)
from autoresearch.errors import UserError


def test_named_sources_and_base_url(monkeypatch):
    monkeypatch.setenv(contract.ENV_BASE_URL, "http://mirror.example/")
    source = resolve_source("climbmix", num_shards=3)
    assert isinstance(source, ClimbMixSource) and source.base_url == "http://mirror.example"
    assert source.shards() == {"train": [0, 1, 2], "val": [6542], "holdout": [6541]}
    assert "mirror" not in str(source.identity())  # a mirror does not change what gets built
    assert isinstance(resolve_source("tinystories", base_url="https://huggingface.co"), TinyStoriesSource)
    assert isinstance(resolve_source("sample"), SampleSource)
    assert base_url_from("https://a.b/c/") == "https://a.b/c"
    with pytest.raises(UserError, match="--base-url"):
        base_url_from("ftp://nope")


def test_local_sources_name_and_order(tmp_path):
    (tmp_path / "my corpus" / "b").mkdir(parents=True)
    (tmp_path / "my corpus" / "b" / "z.txt").write_text("z")
    (tmp_path / "my corpus" / "a.md").write_text("a")
    (tmp_path / "my corpus" / "c.TXT").write_text("c")
    folder = LocalSource(str(tmp_path / "my corpus"))
    assert folder.default_name == "my-corpus"
    assert [part.label for part in folder.fetch(None)] == ["a.md", "b/z.txt", "c.TXT"]
    assert LocalSource(str(tmp_path / "my corpus" / "a.md")).default_name == "a"
    globbed = LocalSource(str(tmp_path / "my corpus" / "**" / "*.txt"))  # case-sensitive, like the shell
    assert [part.label for part in globbed.fetch(None)] == ["b/z.txt"]
    assert globbed.default_name == "my-corpus"
    with pytest.raises(UserError, match="matches no"):
        LocalSource(str(tmp_path / "*.jsonl"))


def test_identity_of_local_files_follows_their_content(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    before = LocalSource(str(tmp_path)).identity()
    (tmp_path / "a.txt").write_text("two")
    assert LocalSource(str(tmp_path)).identity() != before


def test_short_text_is_one_document_and_long_text_is_cut_at_blank_lines():
    assert readers.split_long_text("a\n\nb") == ["a\n\nb"]
    assert readers.split_long_text(" \n ") == []
    paragraphs = [f"p{i} " + "x" * 1000 for i in range(100)]
    documents = readers.split_long_text("\n\n \n".join(paragraphs))
    assert len(documents) > 10
    assert all(len(document) <= readers.CHUNK_CHARS + 1100 for document in documents)
    assert [p for document in documents for p in document.split("\n\n")] == paragraphs


def test_split_assignment_is_stable_and_keeps_duplicates_together():
    texts = [f"document {i}" for i in range(1000)] + ["document 5"] * 3
    keys = np.array([split.document_key(text) for text in texts], dtype=np.uint64)
    codes = split.assign_splits(keys, 0.05, 0.05, where="test")
    counts = np.bincount(codes, minlength=3)
    assert counts[split.VAL] == 50 and counts[split.HOLDOUT] == 50
    assert len({codes[i] for i, text in enumerate(texts) if text == "document 5"}) == 1
    assert split.document_key("héllo") == split.document_key("héllo") != split.document_key("hello")
    reordered = split.assign_splits(keys[::-1], 0.05, 0.05, where="test")
    assert (reordered[::-1] == codes).all()  # file order does not matter


def test_tiny_corpus_still_gets_one_val_and_one_holdout_document():
    keys = np.array([split.document_key(f"d{i}") for i in range(split.MIN_DOCUMENTS)], dtype=np.uint64)
    assert np.bincount(split.assign_splits(keys, 0.05, 0.05, where="t"), minlength=3).tolist() == [8, 1, 1]
