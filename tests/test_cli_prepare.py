"""`autoresearch prepare` from the command line: success, and every bad input as one `error:` line."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autoresearch import contract
from autoresearch.cli import main
from autoresearch.data import encode, layout
from autoresearch.data.manifest import verify_dataset


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def assert_clean_failure(args: list[str], capsys, needle: str) -> None:
    code, out, err = run_cli([*args, "--quiet"], capsys)
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err + out
    datasets = contract.datasets_dir()
    assert not datasets.exists() or list(datasets.iterdir()) == [], list(datasets.iterdir())


def stories(n: int) -> list[str]:
    return [f"Story number {i} is about a cat called Tom{i % 7} who liked fish." for i in range(n)]


def test_prepare_sample_in_a_real_subprocess(tmp_path):
    env = {**os.environ, contract.ENV_CACHE_DIR: str(tmp_path / "cache")}
    command = [sys.executable, "-m", "autoresearch", "prepare", "--dataset", "sample",
               "--vocab-size", "600"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    dataset = tmp_path / "cache" / "datasets" / "sample"
    assert result.stdout.strip() == str(dataset)  # stdout is just the path, for scripts
    assert "train:" in result.stderr and "Traceback" not in result.stderr
    assert verify_dataset(dataset)["vocab_size"] == 600
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "up to date" in again.stderr


def test_cache_dir_option_and_name(tmp_path, capsys):
    corpus = tmp_path / "stories.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in stories(40)))
    main(["prepare", "-d", str(corpus), "--name", "demo", "--vocab-size", "300",
          "--cache-dir", str(tmp_path / "elsewhere"), "-q"])  # returns normally on success
    dataset = tmp_path / "elsewhere" / "datasets" / "demo"
    assert capsys.readouterr().out.strip() == str(dataset)
    manifest = verify_dataset(dataset)
    assert manifest["name"] == "demo"
    assert sum(manifest["splits"][split]["documents"] for split in contract.SPLITS) == 40


def test_path_that_does_not_exist(tmp_path, capsys):
    assert_clean_failure(["prepare", "-d", str(tmp_path / "missing")], capsys, "neither a known source")


def test_empty_directory(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert_clean_failure(["prepare", "-d", str(tmp_path / "empty")], capsys,
                         "no .txt, .md, .jsonl or .parquet")


def test_corpus_of_blank_files_is_empty(tmp_path, capsys):
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text("  \n\n ")
    assert_clean_failure(["prepare", "-d", str(tmp_path / "blank")], capsys, "corpus is empty")


def test_corpus_too_small_for_val_and_holdout(tmp_path, capsys):
    (tmp_path / "small").mkdir()
    for i, text in enumerate(stories(4)):
        (tmp_path / "small" / f"{i}.txt").write_text(text)
    assert_clean_failure(["prepare", "-d", str(tmp_path / "small")], capsys, "at least 10 are needed")


def test_duplicates_cannot_fill_three_splits(tmp_path, capsys):
    path = tmp_path / "same.jsonl"
    path.write_text("".join(json.dumps({"text": "the same line"}) + "\n" for _ in range(50)))
    assert_clean_failure(["prepare", "-d", str(path)], capsys, "too few distinct documents")


def test_invalid_utf8_text_file(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    for i, text in enumerate(stories(20)):
        (tmp_path / "bad" / f"{i:02d}.txt").write_text(text)
    (tmp_path / "bad" / "latin1.md").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    assert_clean_failure(["prepare", "-d", str(tmp_path / "bad")], capsys,
                         "latin1.md: invalid UTF-8 at byte 3")


def test_invalid_utf8_jsonl_line(tmp_path, capsys):
    path = tmp_path / "lines.jsonl"
    good = "".join(json.dumps({"text": text}) + "\n" for text in stories(20))
    path.write_bytes(good.encode() + b'{"text": "bad \xff byte"}\n')
    assert_clean_failure(["prepare", "-d", str(path)], capsys, "lines.jsonl:21: invalid UTF-8")


def test_jsonl_without_text_field(tmp_path, capsys):
    path = tmp_path / "lines.jsonl"
    path.write_text(json.dumps({"story": "no text key"}) + "\n")
    assert_clean_failure(["prepare", "-d", str(path)], capsys, 'lines.jsonl:1: no string "text" field')


def test_jsonl_that_is_not_json(tmp_path, capsys):
    path = tmp_path / "lines.jsonl"
    path.write_text("{not json\n")
    assert_clean_failure(["prepare", "-d", str(path)], capsys, "lines.jsonl:1: not valid JSON")


def test_parquet_without_text_column(tmp_path, capsys):
    pq.write_table(pa.table({"body": stories(20)}), tmp_path / "data.parquet")
    assert_clean_failure(["prepare", "-d", str(tmp_path / "data.parquet")], capsys,
                         "no 'text' column (columns: body)")


def test_truncated_parquet(tmp_path, capsys):
    pq.write_table(pa.table({"text": stories(200)}), tmp_path / "whole.parquet")
    content = (tmp_path / "whole.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(content[: len(content) // 2])
    assert_clean_failure(["prepare", "-d", str(tmp_path / "cut.parquet")], capsys,
                         "not a readable parquet file")


@pytest.mark.parametrize("vocab", ["100", "256", "99999999"])
def test_vocab_size_out_of_range(vocab, capsys):
    assert_clean_failure(["prepare", "-d", "sample", "--vocab-size", vocab], capsys, "--vocab-size")


def test_num_shards_out_of_range(capsys):
    assert_clean_failure(["prepare", "--num-shards", "0"], capsys, "--num-shards 0 is out of range")


def test_bad_fraction_and_name(capsys):
    assert_clean_failure(["prepare", "-d", "sample", "--val-fraction", "0.9"], capsys, "--val-fraction")
    assert_clean_failure(["prepare", "-d", "sample", "--name", "../escape"], capsys, "--name")


def test_disk_full_while_writing(tmp_path, monkeypatch, capsys):
    def full(self):
        where = str(layout.bin_path(self.dataset_dir, self.split))
        raise OSError(errno.ENOSPC, "No space left on device", where)

    corpus = tmp_path / "stories.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in stories(40)))
    monkeypatch.setattr(encode.SplitWriter, "flush", full)
    assert_clean_failure(["prepare", "-d", str(corpus), "--vocab-size", "300"], capsys, "disk full")
