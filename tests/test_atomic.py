"""Atomic writes: the whole text or the old file, the file's mode kept, no temporary left behind."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from autoresearch import atomic, ledger


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_a_new_file_gets_the_mode_open_would_give_it_and_missing_directories(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        path = tmp_path / "deep" / "er" / "notes.md"
        atomic.write_text_atomic(path, "héllo\n")
    finally:
        os.umask(umask)
    assert path.read_bytes() == "héllo\n".encode()
    assert _mode(path) == 0o644  # not mkstemp's private 0o600
    assert _leftovers(path.parent) == []


def test_rewriting_keeps_the_existing_mode_unless_one_is_given(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    path.write_text("old\n")
    os.chmod(path, 0o640)
    atomic.write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n" and _mode(path) == 0o640
    atomic.write_text_atomic(path, "newer\n", mode=0o604)
    assert path.read_text() == "newer\n" and _mode(path) == 0o604


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        atomic.write_text_atomic(path, "half \udc80 written")  # a lone surrogate cannot be UTF-8
    assert path.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_json_is_indented_sorted_and_ends_with_a_newline_and_the_ledger_names_still_work(tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    ledger.write_json_atomic(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2) + "\n"
    ledger.write_text_atomic(path, "plain\n")
    assert path.read_text() == "plain\n"
