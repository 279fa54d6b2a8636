"""The text editor tool: each command, the one writable file, the viewable set, and path escapes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autoresearch.agent.editor import TOOL_NAME, TOOL_TYPE, TrainPyEditor

TRAIN_PY = "import torch\n\nDEPTH = 8\nMATRIX_LR = 0.04\nprint('train')\n"


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    root = tmp_path / "worktree"
    root.mkdir()
    (root / "train.py").write_text(TRAIN_PY)
    (root / "prepare.py").write_text("MAX_SEQ_LEN = 2048\n")
    (root / "program.md").write_text("# program\nbe brave\n")
    (root / "README.md").write_text("readme\n")
    (root / "secret.txt").write_text("do not read\n")
    (root / "sub").mkdir()
    (root / "sub" / "train.py").write_text("nested\n")
    return root


@pytest.fixture
def trial_dir(tmp_path: Path) -> Path:
    root = tmp_path / "runs" / "tag" / "trial-0003"
    root.mkdir(parents=True)
    (root / "train.log").write_text("".join(f"step {i}\n" for i in range(1, 201)))
    (root / "eval.json").write_text('{"val_bpb": 1.0}\n')
    return root


def run(editor: TrainPyEditor, **tool_input):
    return editor.execute(tool_input)


def test_view_numbers_lines_and_honours_view_range(worktree):
    editor = TrainPyEditor(worktree)
    result = run(editor, command="view", path="train.py")
    assert not result.is_error
    assert "     3\tDEPTH = 8" in result.content and "     5\tprint('train')" in result.content
    ranged = run(editor, command="view", path="train.py", view_range=[3, 4])
    assert "DEPTH = 8" in ranged.content and "MATRIX_LR" in ranged.content
    assert "import torch" not in ranged.content
    to_end = run(editor, command="view", path="train.py", view_range=[4, -1])
    assert "print('train')" in to_end.content and "DEPTH" not in to_end.content
    bad = run(editor, command="view", path="train.py", view_range=[4, 99])
    assert bad.is_error and "out of range" in bad.content


def test_str_replace_edits_train_py_once_and_reports_a_snippet(worktree):
    editor = TrainPyEditor(worktree)
    result = run(editor, command="str_replace", path="train.py", old_str="MATRIX_LR = 0.04",
                 new_str="MATRIX_LR = 0.06")
    assert not result.is_error, result.content
    assert (worktree / "train.py").read_text() == TRAIN_PY.replace("0.04", "0.06")
    assert "MATRIX_LR = 0.06" in result.content and editor.edits == ["str_replace at line 4"]


def test_str_replace_with_zero_or_two_matches_is_an_error_and_changes_nothing(worktree):
    editor = TrainPyEditor(worktree)
    missing = run(editor, command="str_replace", path="train.py", old_str="MATRIX_LR = 0.05", new_str="x")
    assert missing.is_error and "did not appear verbatim" in missing.content
    (worktree / "train.py").write_text("A = 1\nA = 1\n")
    twice = run(editor, command="str_replace", path="train.py", old_str="A = 1", new_str="A = 2")
    assert twice.is_error and "appears 2 times" in twice.content and "lines 1, 2" in twice.content
    assert (worktree / "train.py").read_text() == "A = 1\nA = 1\n"
    empty = run(editor, command="str_replace", path="train.py", old_str="", new_str="x")
    assert empty.is_error


def test_create_and_insert_write_train_py_atomically(worktree):
    editor = TrainPyEditor(worktree)
    os.chmod(worktree / "train.py", 0o640)
    created = run(editor, command="create", path="/train.py", file_text="A = 1\nB = 2\n")
    assert not created.is_error and (worktree / "train.py").read_text() == "A = 1\nB = 2\n"
    assert (worktree / "train.py").stat().st_mode & 0o777 == 0o640  # mode kept across the replace
    inserted = run(editor, command="insert", path=str(worktree / "train.py"), insert_line=1,
                   insert_text="C = 3\n")
    assert not inserted.is_error and (worktree / "train.py").read_text() == "A = 1\nC = 3\nB = 2\n"
    top = run(editor, command="insert", path="train.py", insert_line=0, insert_text="# top")
    assert not top.is_error and (worktree / "train.py").read_text().startswith("# top\nA = 1\n")
    beyond = run(editor, command="insert", path="train.py", insert_line=99, insert_text="x")
    assert beyond.is_error and "out of range" in beyond.content
    assert not [p for p in worktree.iterdir() if p.name.endswith(".tmp")]  # no temp files left behind


@pytest.mark.parametrize("path", ["prepare.py", "program.md", "README.md", "secret.txt", "sub/train.py",
                                  "../train.py", "/etc/passwd", "trial/train.log"])
def test_writes_go_to_train_py_only(worktree, trial_dir, path):
    editor = TrainPyEditor(worktree, trial_dir)
    before = {p: p.read_bytes() for p in worktree.rglob("*") if p.is_file()}
    for tool_input in ({"command": "str_replace", "old_str": "x", "new_str": "y"},
                       {"command": "create", "file_text": "pwned\n"},
                       {"command": "insert", "insert_line": 0, "insert_text": "pwned\n"}):
        result = editor.execute({**tool_input, "path": path})
        assert result.is_error, (path, tool_input)
        assert result.content.startswith("Error:")
    assert {p: p.read_bytes() for p in worktree.rglob("*") if p.is_file()} == before
    assert (trial_dir / "train.log").read_text().startswith("step 1\n")


def test_view_allows_the_readable_set_and_the_trial_records(worktree, trial_dir):
    editor = TrainPyEditor(worktree, trial_dir)
    for path in ("prepare.py", "program.md", "README.md", "./train.py", str(worktree / "program.md")):
        assert not run(editor, command="view", path=path).is_error, path
    for path in ("trial/eval.json", "eval.json", str(trial_dir / "train.log")):
        result = run(editor, command="view", path=path)
        assert not result.is_error, path
    assert "val_bpb" in run(editor, command="view", path="trial/eval.json").content


@pytest.mark.parametrize("path", ["secret.txt", "sub/train.py", "../worktree/train.py", "/etc/passwd",
                                  "sub", ".", "/", "trial/../../worktree/secret.txt", "pyproject.toml", ""])
def test_view_denies_everything_else(worktree, trial_dir, path):
    result = run(TrainPyEditor(worktree, trial_dir), command="view", path=path)
    assert result.is_error, path
    assert "do not read" not in result.content


def test_symlinks_that_escape_are_refused(worktree, trial_dir, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("outside secret\n")
    (trial_dir / "leak.log").symlink_to(outside)
    (worktree / "program.md").unlink()
    (worktree / "program.md").symlink_to(outside)
    editor = TrainPyEditor(worktree, trial_dir)
    for path in ("trial/leak.log", "program.md"):
        result = run(editor, command="view", path=path)
        assert result.is_error and "outside secret" not in result.content, path
    (worktree / "train.py").unlink()
    (worktree / "train.py").symlink_to(outside)
    result = run(editor, command="create", path="train.py", file_text="pwned\n")
    assert result.is_error and outside.read_text() == "outside secret\n"


def test_malformed_calls_come_back_as_errors(worktree):
    editor = TrainPyEditor(worktree)
    for tool_input in ({}, {"command": "undo_edit", "path": "train.py"}, {"command": "view"},
                       {"command": "str_replace", "path": "train.py", "new_str": "x"},
                       {"command": "insert", "path": "train.py", "insert_line": "2", "insert_text": "x"},
                       {"command": "view", "path": "train.py", "view_range": "1-3"}, "not a dict"):
        result = editor.execute(tool_input)
        assert result.is_error, tool_input
    assert (worktree / "train.py").read_text() == TRAIN_PY


def test_tool_definition_and_max_characters(worktree, trial_dir):
    editor = TrainPyEditor(worktree, trial_dir, max_characters=200)
    assert editor.tool_definition() == {"type": TOOL_TYPE, "name": TOOL_NAME, "max_characters": 200}
    log = run(editor, command="view", path="trial/train.log").content
    assert "omitted" in log and "step 200" in log and "step 1\n" not in log  # logs keep their end
    (worktree / "train.py").write_text("".join(f"X{i} = {i}\n" for i in range(100)))
    source = run(editor, command="view", path="train.py").content
    assert "X0 = 0" in source and "X99" not in source and "omitted" in source
