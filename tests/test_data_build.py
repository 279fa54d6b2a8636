"""prepare_dataset end to end on small local data: formats, determinism, byte counts, idempotence,
atomicity, verification."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SHARED_DATA

from autoresearch import contract
from autoresearch.data import bpe, build, layout
from autoresearch.data.build import prepare_dataset
from autoresearch.data.manifest import verify_dataset
from autoresearch.errors import UserError

SMALL_SAMPLE = 300_000  # characters: a sample dataset in well under a second


def sample_dataset(**overrides) -> Path:
    options = {"vocab_size": 512, "sample_chars": SMALL_SAMPLE, "show_progress": False}
    options.update(overrides)
    return prepare_dataset("sample", **options)


def decoded_documents(dataset: Path, split: str) -> list[str]:
    manifest = json.loads((dataset / layout.MANIFEST).read_text())
    encoding = layout.read_tokenizer(dataset).encoding()
    tokens, starts = layout.read_split(dataset, split, manifest["token_dtype"])
    return [encoding.decode(tokens[start + 1 : end].tolist())
            for start, end in zip(starts[:-1], starts[1:], strict=True)]


def write_mixed_corpus(root: Path) -> list[str]:
    """A folder with every supported file type; returns all its documents."""
    (root / "notes").mkdir(parents=True)
    documents = []
    for i in range(6):
        text = f"Note {i}: the tea in café {i} costs {i * 3} € — naïve résumé. 日本語のテキスト {i}。 🙂"
        (root / "notes" / f"note{i}.txt").write_text(text, encoding="utf-8")
        documents.append(text)
    markdown = "# Title\n\nSome *markdown* text with ümlauts and a table | a | b |."
    (root / "readme.md").write_text(markdown, encoding="utf-8")
    documents.append(markdown)
    lines = [{"text": f"json line {i}: Ελληνικά κείμενα και αριθμοί {i * i}"} for i in range(12)]
    (root / "lines.jsonl").write_text("\n".join(json.dumps(line, ensure_ascii=i % 2 == 0)
                                                for i, line in enumerate(lines)) + "\n\n", encoding="utf-8")
    documents += [line["text"] for line in lines]
    rows = [f"parquet row {i}: Кириллица и цифры {i}" for i in range(10)]
    pq.write_table(pa.table({"text": rows + [None, "   "], "id": list(range(12))}), root / "table.parquet")
    documents += rows
    (root / ".hidden").mkdir()
    (root / ".hidden" / "skip.txt").write_text("never read")
    (root / "ignored.csv").write_text("a,b\n1,2\n")
    return documents


def test_local_folder_of_every_format_with_exact_utf8_byte_counts(tmp_path):
    documents = write_mixed_corpus(tmp_path / "corpus")
    dataset = prepare_dataset(str(tmp_path / "corpus"), vocab_size=300, show_progress=False)
    assert dataset.name == "corpus"
    manifest = verify_dataset(dataset)
    assert sorted(entry["file"] for entry in manifest["inputs"]) == sorted(
        [f"notes/note{i}.txt" for i in range(6)] + ["readme.md", "lines.jsonl", "table.parquet"])
    token_bytes = layout.read_token_bytes(dataset)
    seen = []
    for split in contract.SPLITS:
        texts = decoded_documents(dataset, split)
        seen += texts
        counts = manifest["splits"][split]
        assert counts["documents"] == len(texts) >= 1
        assert counts["bytes"] == sum(len(text.encode("utf-8")) for text in texts)
        tokens, _ = layout.read_split(dataset, split, manifest["token_dtype"])
        # scored bytes, as the reference counts them: the UTF-8 of each token decoded alone (a
        # fragment of a character decodes to U+FFFD, 3 bytes), special tokens 0
        encoding = layout.read_tokenizer(dataset).encoding()
        decoded = sum(len(encoding.decode([token]).encode("utf-8")) for token in np.asarray(tokens).tolist()
                      if token < len(layout.read_tokenizer(dataset).ranks))
        assert int(token_bytes[np.asarray(tokens)].sum()) == decoded
    assert sorted(seen) == sorted(documents)  # every document exactly once, none invented


def test_two_builds_are_byte_identical(tmp_path):
    first = sample_dataset(cache_dir=tmp_path / "a")
    second = sample_dataset(cache_dir=tmp_path / "b")
    names = sorted(path.name for path in first.iterdir())
    assert layout.MANIFEST in names and len(names) == 9
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_rerun_is_fast_and_touches_nothing_then_changes_rebuild():
    dataset = sample_dataset()
    stamps = {path.name: path.stat().st_mtime_ns for path in dataset.iterdir()}
    started = time.perf_counter()
    assert sample_dataset() == dataset
    assert time.perf_counter() - started < 1.0
    assert {path.name: path.stat().st_mtime_ns for path in dataset.iterdir()} == stamps

    sample_dataset(vocab_size=400)  # different parameters: rebuilt in place
    assert verify_dataset(dataset)["vocab_size"] == 400
    before = (dataset / layout.MANIFEST).stat().st_mtime_ns
    sample_dataset(vocab_size=400, force=True)
    assert (dataset / layout.MANIFEST).stat().st_mtime_ns != before
    assert [path.name for path in dataset.parent.iterdir()] == ["sample"]  # no leftovers


def test_verify_rejects_damage_and_prepare_repairs_it():
    dataset = sample_dataset()
    train = layout.bin_path(dataset, "train")
    data = bytearray(train.read_bytes())
    data[100] ^= 0xFF
    train.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256"):
        verify_dataset(dataset)
    verify_dataset(dataset, check_hashes=False)  # same size: only the hash can tell
    sample_dataset()  # notices and rebuilds
    verify_dataset(dataset)
    layout.docs_path(dataset, "val").unlink()
    with pytest.raises(UserError, match="val.docs.npy is missing"):
        verify_dataset(dataset)
    (dataset / layout.MANIFEST).unlink()
    with pytest.raises(UserError, match="incomplete"):
        verify_dataset(dataset)
    with pytest.raises(UserError, match="no prepared dataset"):
        verify_dataset(dataset.parent / "nothing-here")


def test_interrupted_build_leaves_nothing_and_stale_partials_are_cleaned(monkeypatch):
    datasets = contract.datasets_dir()
    dead = datasets / ".sample.partial-999999999"  # a pid that cannot be running
    dead.mkdir(parents=True)
    (dead / "train.bin").write_bytes(b"half")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build.bpe, "train_tokenizer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sample_dataset()
    assert list(datasets.iterdir()) == []  # neither the stale partial nor a new one nor a target


def test_an_existing_dataset_survives_a_failed_rebuild(monkeypatch):
    dataset = sample_dataset()
    def broken(*args, **kwargs):
        raise RuntimeError("a bug halfway through")

    monkeypatch.setattr(build.bpe, "train_tokenizer", broken)
    with pytest.raises(RuntimeError):
        sample_dataset(force=True)
    verify_dataset(dataset)
    assert [path.name for path in dataset.parent.iterdir()] == ["sample"]


def test_long_text_file_is_cut_into_documents_at_blank_lines(tmp_path):
    paragraphs = [f"Paragraph {i}. " + "All the world's a stage. " * 20 for i in range(400)]
    (tmp_path / "book.txt").write_text("\n\n".join(paragraphs))
    dataset = prepare_dataset(str(tmp_path / "book.txt"), vocab_size=300, show_progress=False)
    assert dataset.name == "book"
    manifest = verify_dataset(dataset)
    documents = [text for split in contract.SPLITS for text in decoded_documents(dataset, split)]
    assert sum(manifest["splits"][split]["documents"] for split in contract.SPLITS) == len(documents) > 20
    assert all(len(text) <= 8_192 + 600 for text in documents)
    assert sorted(p for text in documents for p in text.split("\n\n")) == sorted(paragraphs)


def test_tokenizer_chars_bounds_the_training_text():
    dataset = sample_dataset(tokenizer_chars=20_000)
    trained = verify_dataset(dataset)["tokenizer_training"]
    # as the reference: documents until at least 20,000 characters, the last one whole (up to its cut)
    assert 20_000 <= trained["characters"] < 20_000 + bpe.DOCUMENT_CHARS and trained["documents"] < 40


@pytest.mark.skipif(not (SHARED_DATA / "docs-corpus").is_dir(), reason="shared docs corpus absent")
def test_real_docs_corpus_glob(tmp_path):
    pattern = str(SHARED_DATA / "docs-corpus" / "train_00[2].parquet")  # 81 documents, 0.6 M characters
    dataset = prepare_dataset(pattern, name="docs", vocab_size=1024, show_progress=False)
    manifest = verify_dataset(dataset)
    assert [entry["file"] for entry in manifest["inputs"]] == ["train_002.parquet"]
    total = sum(manifest["splits"][split]["documents"] for split in contract.SPLITS)
    expected = pq.ParquetFile(SHARED_DATA / "docs-corpus" / "train_002.parquet").metadata.num_rows
    assert total <= expected and total > 0.95 * expected  # only empty rows are dropped
    assert manifest["vocab_size"] == 1024
    assert os.path.getsize(layout.bin_path(dataset, "train")) == manifest["splits"]["train"]["tokens"] * 2


def test_a_dataset_of_the_old_format_is_refused_then_rebuilt_by_prepare():
    dataset = sample_dataset()
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["format_version"] = 1  # what every dataset prepared before the reference's scoring says
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"has format 1, this version reads 2 .*run `autoresearch prepare "
                                        r"--dataset sample --name sample --force`"):
        verify_dataset(dataset)
    assert sample_dataset() == dataset  # prepare notices and rebuilds it
    assert verify_dataset(dataset)["format_version"] == 2
