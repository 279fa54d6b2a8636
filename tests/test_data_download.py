"""Downloads and the remote sources against a real HTTP server on 127.0.0.1.

The server serves generated parquet files under the Hugging Face URL layout, honours Range
requests, records every request, and can be told to misbehave per file: answer 500, drop the
connection halfway, serve garbage, or ignore Range.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autoresearch import contract
from autoresearch.cli import main
from autoresearch.data import download, layout
from autoresearch.data.build import prepare_dataset
from autoresearch.data.download import RemoteFile, download_all
from autoresearch.data.manifest import verify_dataset
from autoresearch.data.sources import CLIMBMIX_REPO, TINYSTORIES_FILES, TINYSTORIES_REPO
from autoresearch.errors import UserError

WORDS = ["river", "stone", "lamp", "quiet", "green", "ship", "cloud", "bread", "seven", "north", "song",
         "glass"]


def parquet_bytes(n_docs: int, seed: int, column: str = "text") -> bytes:
    rng = np.random.default_rng(seed)
    docs = [" ".join(rng.choice(WORDS, size=int(rng.integers(20, 60)))) + f" ({seed}-{i})"
            for i in range(n_docs)]
    sink = io.BytesIO()
    pq.write_table(pa.table({column: docs}), sink, row_group_size=64)
    return sink.getvalue()


class HubServer:
    """A tiny stand-in for huggingface.co: files by name, faults on demand, a request log."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = defaultdict(list)  # consumed one per request
        self.requests: list[tuple[str, str | None]] = []  # (file name, Range header)
        self.honour_range = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404)
                    return
                fault = server.faults[name].pop(0) if server.faults[name] else None
                if fault == "500":
                    self.send_error(500)
                    return
                body = server.files[name]
                if fault == "garbage":
                    body = b"this is not parquet" * 100
                start = 0
                wanted = self.headers.get("Range")
                if wanted and server.honour_range:
                    start = int(wanted.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if fault == "drop":  # half the bytes, then hang up
                    self.wfile.write(body[start : start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def add(self, repo: str, name: str, content: bytes) -> str:
        self.files[name] = content
        return f"{self.url}/datasets/{repo}/resolve/main/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hub():
    server = HubServer()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setattr(download, "BACKOFF_SECONDS", 0.01)
    monkeypatch.setattr(download, "TIMEOUT_SECONDS", 5.0)


def serve_climbmix(hub: HubServer, indices, n_docs: int = 120) -> None:
    for index in indices:
        hub.add(CLIMBMIX_REPO, f"shard_{index:05d}.parquet", parquet_bytes(n_docs, seed=index))


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- download_all ------------------------------------------------------------------------------


def test_download_survives_500_and_a_dropped_connection_and_resumes_with_range(hub, tmp_path):
    content = parquet_bytes(200, seed=1)
    url = hub.add(CLIMBMIX_REPO, "a.parquet", content)
    hub.faults["a.parquet"] = ["500", "drop"]
    [path] = download_all([RemoteFile(url, "a.parquet")], tmp_path)
    assert path.read_bytes() == content
    assert not (tmp_path / "a.parquet.part").exists()
    assert [name for name, _ in hub.requests] == ["a.parquet"] * 3
    assert hub.requests[0][1] is None and hub.requests[1][1] is None
    assert hub.requests[2][1] == f"bytes={len(content) // 2}-"  # resumed where the drop left off


def test_existing_part_file_is_resumed_not_restarted(hub, tmp_path):
    content = parquet_bytes(200, seed=2)
    url = hub.add(CLIMBMIX_REPO, "b.parquet", content)
    (tmp_path / "b.parquet.part").write_bytes(content[:1000])
    download_all([RemoteFile(url, "b.parquet")], tmp_path)
    assert hub.requests == [("b.parquet", "bytes=1000-")]
    assert (tmp_path / "b.parquet").read_bytes() == content


def test_complete_part_file_answered_416_is_accepted(hub, tmp_path):
    content = parquet_bytes(40, seed=6)
    url = hub.add(CLIMBMIX_REPO, "f.parquet", content)
    (tmp_path / "f.parquet.part").write_bytes(content)  # crashed after the last byte, before the rename
    download_all([RemoteFile(url, "f.parquet")], tmp_path)
    assert hub.requests == [("f.parquet", f"bytes={len(content)}-")]
    assert (tmp_path / "f.parquet").read_bytes() == content


def test_server_that_ignores_range_gets_a_fresh_copy(hub, tmp_path):
    content = parquet_bytes(50, seed=3)
    url = hub.add(CLIMBMIX_REPO, "c.parquet", content)
    hub.honour_range = False
    (tmp_path / "c.parquet.part").write_bytes(b"junk that must not survive")
    download_all([RemoteFile(url, "c.parquet")], tmp_path)
    assert (tmp_path / "c.parquet").read_bytes() == content


def test_valid_downloads_are_reused_without_network(hub, tmp_path):
    url = hub.add(CLIMBMIX_REPO, "d.parquet", parquet_bytes(30, seed=4))
    download_all([RemoteFile(url, "d.parquet")], tmp_path)
    hub.requests.clear()
    download_all([RemoteFile(url, "d.parquet")], tmp_path)
    assert hub.requests == []


def test_corrupt_parquet_is_never_accepted(hub, tmp_path):
    url = hub.add(CLIMBMIX_REPO, "e.parquet", parquet_bytes(30, seed=5))
    hub.faults["e.parquet"] = ["garbage"] * download.ATTEMPTS
    with pytest.raises(UserError, match="not valid parquet"):
        download_all([RemoteFile(url, "e.parquet")], tmp_path)
    assert not (tmp_path / "e.parquet").exists()
    assert len(hub.requests) == download.ATTEMPTS


def test_missing_file_fails_at_once(hub, tmp_path):
    with pytest.raises(UserError, match="HTTP 404"):
        download_all([RemoteFile(f"{hub.url}/nope.parquet", "nope.parquet")], tmp_path)
    assert len(hub.requests) == 1


def test_parallel_downloads_stop_at_the_first_fatal_error(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "BACKOFF_SECONDS", 5.0)  # a slow retrier must be cancelled, not awaited
    files = [RemoteFile(hub.add(CLIMBMIX_REPO, f"g{i}.parquet", parquet_bytes(20, seed=i)), f"g{i}.parquet")
             for i in range(3)]
    hub.faults["g1.parquet"] = ["500"] * 5
    files.append(RemoteFile(f"{hub.url}/missing.parquet", "missing.parquet"))
    started = time.perf_counter()
    with pytest.raises(UserError, match="missing.parquet answered HTTP 404"):
        download_all(files, tmp_path, workers=4)
    assert time.perf_counter() - started < 3.0
    assert not (tmp_path / "missing.parquet").exists() and not (tmp_path / "g1.parquet").exists()


def test_unreachable_host_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="could not download .* after"):
        download_all([RemoteFile(f"{closed_port_url()}/x.parquet", "x.parquet")], tmp_path)


# --- remote sources through prepare_dataset ------------------------------------------------------


def test_climbmix_from_a_mirror_pins_val_and_holdout_and_skips_on_rerun(hub, tmp_path):
    serve_climbmix(hub, [0, 1, 4, 5])  # last_shard=5: train 0,1; val 5; holdout 4
    dataset = prepare_dataset("climbmix", num_shards=2, vocab_size=300, base_url=hub.url, last_shard=5,
                              show_progress=False)
    assert dataset == contract.datasets_dir() / "climbmix"
    manifest = verify_dataset(dataset)
    assert manifest["parameters"]["source"]["shards"] == {"train": [0, 1], "val": [5], "holdout": [4]}
    assert [(entry["file"], entry["split"]) for entry in manifest["inputs"]] == [
        ("shard_00000.parquet", "train"), ("shard_00001.parquet", "train"),
        ("shard_00005.parquet", "val"), ("shard_00004.parquet", "holdout")]
    assert {split: counts["documents"] for split, counts in manifest["splits"].items()} == {
        "train": 240, "val": 120, "holdout": 120}
    assert (contract.downloads_dir() / "climbmix" / "shard_00005.parquet").is_file()
    # the val split is exactly shard 5, in order
    spec = layout.read_tokenizer(dataset)
    tokens, starts = layout.read_split(dataset, "val", manifest["token_dtype"])
    first = spec.encoding().decode(tokens[starts[0] + 1 : starts[1]].tolist())
    shard = contract.downloads_dir() / "climbmix" / "shard_00005.parquet"
    assert first == pq.read_table(shard)["text"][0].as_py()

    hub.requests.clear()
    started = time.perf_counter()
    again = prepare_dataset("climbmix", num_shards=2, vocab_size=300, base_url=hub.url, last_shard=5,
                            show_progress=False)
    assert again == dataset and hub.requests == []
    assert time.perf_counter() - started < 2.0


def test_climbmix_byte_identical_from_two_mirrors(hub, tmp_path, monkeypatch):
    serve_climbmix(hub, [0, 2, 3], n_docs=80)
    first = prepare_dataset("climbmix", num_shards=1, vocab_size=280, base_url=hub.url, last_shard=3,
                            show_progress=False, cache_dir=tmp_path / "one")
    other = HubServer()
    try:
        other.files = dict(hub.files)
        monkeypatch.setenv(contract.ENV_BASE_URL, other.url)  # the env var picks the mirror
        second = prepare_dataset("climbmix", num_shards=1, vocab_size=280, last_shard=3, show_progress=False,
                                 cache_dir=tmp_path / "two")
        assert other.requests  # it really came from the second server
    finally:
        other.close()
    names = sorted(path.name for path in first.iterdir())
    assert names == sorted(path.name for path in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_tinystories_single_file_is_split_per_document(hub):
    hub.add(TINYSTORIES_REPO, TINYSTORIES_FILES[0], parquet_bytes(300, seed=9))
    dataset = prepare_dataset("tinystories", vocab_size=300, base_url=hub.url, show_progress=False)
    manifest = verify_dataset(dataset)
    counts = {split: manifest["splits"][split]["documents"] for split in contract.SPLITS}
    assert counts == {"train": 270, "val": 15, "holdout": 15}
    assert hub.requests[0][0] == "tinystories_gpt4_clean.parquet"


# --- failures through the CLI ------------------------------------------------------------------


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


def assert_clean_failure(code: int, err: str, needle: str) -> None:
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0]
    assert "Traceback" not in err
    datasets = contract.datasets_dir()
    assert not datasets.exists() or list(datasets.iterdir()) == []


def test_cli_unreachable_host(capsys):
    code, err = run_cli(["prepare", "--num-shards", "1", "--base-url", closed_port_url(), "-q"], capsys)
    assert_clean_failure(code, err, "could not download")


def test_cli_remote_parquet_without_text_column(hub, capsys):
    hub.add(TINYSTORIES_REPO, TINYSTORIES_FILES[0], parquet_bytes(40, seed=1, column="story"))
    code, err = run_cli(["prepare", "-d", "tinystories", "--base-url", hub.url, "-q"], capsys)
    assert_clean_failure(code, err, "no 'text' column")


def test_cli_remote_corrupt_parquet(hub, capsys):
    hub.add(TINYSTORIES_REPO, TINYSTORIES_FILES[0], parquet_bytes(40, seed=1))
    hub.faults[TINYSTORIES_FILES[0]] = ["garbage"] * download.ATTEMPTS
    code, err = run_cli(["prepare", "-d", "tinystories", "--base-url", hub.url, "-q"], capsys)
    assert_clean_failure(code, err, "not valid parquet")
    assert not any(Path(contract.downloads_dir(), "tinystories").glob("*.parquet"))
