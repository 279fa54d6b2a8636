"""A run checks the dataset's hashes before it starts (issue 9, item 6), and remembers what it checked.

The run-level cases start a real `autoresearch run` process against a corrupted copy of the tiny
dataset: it must stop before any trial with one `error:` line. The cache cases call
`verify_dataset` with a cache file and count how many files it really reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from run_fixtures import make_project, sealed_copy

from autoresearch.data import manifest as manifest_module
from autoresearch.data.manifest import verify_dataset
from autoresearch.errors import UserError


@pytest.fixture
def dataset(tiny_dataset: Path, tmp_path: Path) -> Path:
    return sealed_copy(tiny_dataset, tmp_path / "data" / "tiny")


def flip_two_bytes(path: Path, at: int = 10) -> None:
    """Change two bytes in place: same size, new content."""
    with open(path, "r+b") as handle:
        handle.seek(at)
        pair = handle.read(2)
        handle.seek(at)
        handle.write(bytes(value ^ 0xFF for value in pair))


def start_run(project: Path, data_dir: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "AUTORESEARCH_DATA_DIR": str(data_dir)}
    environment.pop("AUTORESEARCH_DATASET", None)
    return subprocess.run([sys.executable, "-m", "autoresearch", "run", "--agent", "offline", "--budget", "5",
                           "--device", "cpu", "--tag", "t", "--max-trials", "1"],
                          cwd=project, env=environment, capture_output=True, text=True, timeout=120)


def assert_refused(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_run_refuses_a_val_bin_with_two_flipped_bytes(dataset: Path, tmp_path: Path) -> None:
    flip_two_bytes(dataset / "val.bin")
    result = start_run(make_project(tmp_path / "project"), dataset)
    assert_refused(result, "val.bin does not match its sha256")
    assert not list(tmp_path.glob("project/**/trial-0000"))


def test_run_refuses_a_manifest_with_an_edited_sha256(dataset: Path, tmp_path: Path) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["files"]["val.bin"]["sha256"] = "0" * 64
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    result = start_run(make_project(tmp_path / "project"), dataset)
    assert_refused(result, "val.bin does not match its sha256")


# --- the verification cache ---------------------------------------------------------------------


@pytest.fixture
def counted_hashing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files `verify_dataset` hashes from here on."""
    hashed: list[str] = []
    real = manifest_module.file_sha256

    def counting(path: Path, *args, **kwargs) -> str:
        hashed.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(manifest_module, "file_sha256", counting)
    return hashed


def test_a_verified_dataset_is_not_read_again(dataset: Path, tmp_path: Path, counted_hashing: list[str]) -> None:
    cache = tmp_path / "verified.json"
    verify_dataset(dataset, hash_cache=cache)
    assert sorted(counted_hashing) == sorted(manifest_module.data_files(dataset))
    counted_hashing.clear()
    verify_dataset(dataset, hash_cache=cache)
    assert counted_hashing == []


def test_the_cache_does_not_hide_a_change(dataset: Path, tmp_path: Path, counted_hashing: list[str]) -> None:
    cache = tmp_path / "verified.json"
    verify_dataset(dataset, hash_cache=cache)
    counted_hashing.clear()
    before = os.stat(dataset / "val.bin")
    flip_two_bytes(dataset / "val.bin")
    os.utime(dataset / "val.bin", ns=(before.st_atime_ns, before.st_mtime_ns))  # size and mtime as before
    with pytest.raises(UserError, match="val.bin does not match its sha256"):
        verify_dataset(dataset, hash_cache=cache)
    assert counted_hashing == ["val.bin"]  # only the changed file was read again


def test_the_cache_does_not_hide_an_edited_manifest(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "verified.json"
    verify_dataset(dataset, hash_cache=cache)
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["files"]["train.bin"]["sha256"] = "f" * 64
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="train.bin does not match its sha256"):
        verify_dataset(dataset, hash_cache=cache)


def test_an_unreadable_cache_is_rebuilt(dataset: Path, tmp_path: Path, counted_hashing: list[str]) -> None:
    cache = tmp_path / "verified.json"
    cache.write_text("{not json")
    verify_dataset(dataset, hash_cache=cache)
    assert len(counted_hashing) == len(manifest_module.data_files(dataset))
    assert json.loads(cache.read_text())  # rewritten whole


def test_run_refuses_a_dataset_of_the_old_format(dataset: Path, tmp_path: Path) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["format_version"] = 1  # prepared before the reference's scoring: never scored with the new rows
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    result = start_run(make_project(tmp_path / "project"), dataset)
    assert_refused(result, "has format 1, this version reads 2")
    assert "autoresearch prepare" in result.stderr and "--force" in result.stderr
