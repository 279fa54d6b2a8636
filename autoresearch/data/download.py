"""Download parquet files over HTTP(S): parallel, retried with back-off, resumable, validated.

A file is fetched into `<name>.part` (continuing an earlier `.part` with an HTTP Range request
when the server allows it), and only once it opens as a valid parquet file is it renamed to
`<name>`. So a file without the `.part` suffix is always a complete parquet file, and a crash or
Ctrl-C at any moment costs at most the bytes in flight.

What this does NOT protect against: a server that serves a different but valid parquet file
under the same name (there are no published checksums to compare with), and a parquet file
whose footer is intact but whose pages are damaged (that surfaces later, when the file is read,
as a UserError naming it). Only the standard library's urllib is used: no proxies beyond what
urllib reads from the environment, no authentication.
"""

from __future__ import annotations

import errno
import http.client
import os
import threading
import urllib.error
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from autoresearch.data.progress import Reporter
from autoresearch.errors import UserError

ATTEMPTS = 5  # tries per file before giving up
BACKOFF_SECONDS = 1.0  # wait before retry k (k = 1, 2, ...) is BACKOFF_SECONDS * 2 ** (k - 1)
TIMEOUT_SECONDS = 30.0  # per socket operation, not per file
WORKERS = 8
CHUNK_BYTES = 1 << 20
USER_AGENT = "autoresearch-prepare"
FATAL_HTTP_CODES = (401, 403, 404, 410)  # retrying cannot help


@dataclass(frozen=True)
class RemoteFile:
    url: str
    filename: str


def is_valid_parquet(path: Path) -> bool:
    """True when `path` opens as parquet (magic bytes and footer metadata readable)."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        _ = parquet.metadata.num_rows
        return True
    except Exception:  # pyarrow raises several types (ArrowInvalid, OSError, ...) for bad files
        return False


def download_all(files: list[RemoteFile], destination: Path, reporter: Reporter | None = None,
                 workers: int | None = None) -> list[Path]:
    """Make every file present and valid under `destination`; returns their paths in order.

    Files already there and valid are reused without touching the network.
    """
    reporter = reporter or Reporter(show=False)
    destination.mkdir(parents=True, exist_ok=True)
    paths = [destination / remote.filename for remote in files]
    missing = []
    for remote, path in zip(files, paths, strict=True):
        if path.exists() and is_valid_parquet(path):
            continue
        path.unlink(missing_ok=True)
        missing.append(remote)
    if not missing:
        return paths
    cancelled = threading.Event()
    with reporter.stage(f"download {len(missing)} file(s)", total=None, unit="B") as stage:
        sizes: dict[str, int] = {}
        sizes_lock = threading.Lock()

        def announce_size(name: str, size: int) -> None:
            with sizes_lock:
                sizes[name] = size
                if len(sizes) == len(missing):
                    stage.set_total(sum(sizes.values()))

        pool = ThreadPoolExecutor(max_workers=min(workers or WORKERS, len(missing)))
        try:
            futures = [pool.submit(_fetch, remote, destination, stage.advance, announce_size, cancelled)
                       for remote in missing]
            wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:
                if future.done() and future.exception() is not None:
                    raise future.exception()
        finally:
            cancelled.set()
            pool.shutdown(wait=True, cancel_futures=True)
    return paths


def _fetch(remote: RemoteFile, destination: Path, advance, announce_size, cancelled: threading.Event) -> Path:
    final = destination / remote.filename
    part = destination / (remote.filename + ".part")
    host = urlsplit(remote.url).netloc or remote.url
    last_problem = "no attempt made"
    for attempt in range(1, ATTEMPTS + 1):
        if cancelled.is_set():
            raise UserError(f"download of {remote.filename} cancelled")
        if attempt > 1 and cancelled.wait(BACKOFF_SECONDS * 2 ** (attempt - 2)):
            raise UserError(f"download of {remote.filename} cancelled")
        try:
            _stream_into(remote.url, part, advance, announce_size, remote.filename, cancelled)
        except urllib.error.HTTPError as error:
            if error.code in FATAL_HTTP_CODES:
                raise UserError(f"{remote.url} answered HTTP {error.code}; check --base-url / "
                                f"AUTORESEARCH_BASE_URL and the dataset name") from None
            if error.code == 416:  # nothing left to fetch: the .part is complete, or does not fit
                if is_valid_parquet(part):
                    os.replace(part, final)
                    return final
                part.unlink(missing_ok=True)
            last_problem = f"HTTP {error.code}"
            continue
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise
            last_problem = _describe(error)
            continue
        except http.client.HTTPException as error:  # IncompleteRead, BadStatusLine, ...
            last_problem = f"{type(error).__name__}: {error}"
            continue
        if is_valid_parquet(part):
            os.replace(part, final)
            return final
        part.unlink(missing_ok=True)
        last_problem = "the downloaded file is not valid parquet"
    raise UserError(f"could not download {remote.filename} from {host} after {ATTEMPTS} attempts "
                    f"({last_problem}); check the network or --base-url / AUTORESEARCH_BASE_URL, then rerun")


def _stream_into(url: str, part: Path, advance, announce_size, name: str, cancelled: threading.Event) -> None:
    """Append the rest of `url` to `part` (or rewrite it when the server ignores the Range)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
        resumed = have > 0 and response.status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None else None
        if expected is not None:
            announce_size(name, expected)
        written = have
        with open(part, "ab" if resumed else "wb") as sink:
            while True:
                if cancelled.is_set():
                    raise ConnectionError("cancelled")
                chunk = response.read(CHUNK_BYTES)
                if not chunk:
                    break
                sink.write(chunk)
                written += len(chunk)
                advance(len(chunk))
    if expected is not None and written < expected:
        raise ConnectionError(f"connection closed after {written} of {expected} bytes")


def _describe(error: OSError) -> str:
    if isinstance(error, urllib.error.URLError):
        return f"cannot connect: {error.reason}"
    return f"{type(error).__name__}: {error}"
