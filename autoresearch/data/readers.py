"""Read text documents out of files: .parquet (a `text` column), .jsonl (a `text` field), .txt, .md.

Every reader yields batches (lists) of documents in file order and skips documents that are
empty or only whitespace, so every later stage sees the same documents.

Documents in .txt / .md files: a file of at most LONG_TEXT_CHARS characters is one document. A
longer file (a book, tinyshakespeare) is cut at blank lines into documents of about CHUNK_CHARS
characters (paragraphs are grouped greedily and never split, so a single huge paragraph stays
one document); the blank lines between groups are normalised to one empty line. This gives a
single big text file enough documents to fill the val and holdout splits.

What this does NOT protect against: text that is valid UTF-8 but garbage, duplicate documents,
and parquet pages that are damaged in ways pyarrow does not detect.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from autoresearch.errors import UserError

DOCUMENT_SUFFIXES = (".txt", ".md", ".jsonl", ".parquet")
TEXT_COLUMN = "text"
LONG_TEXT_CHARS = 32_768
CHUNK_CHARS = 8_192
BATCH_DOCUMENTS = 1024
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n\s*")


def read_documents(path: Path, delete_if_corrupt: bool = False) -> Iterator[list[str]]:
    """Batches of non-empty documents from one file, chosen by its suffix."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _read_parquet(path, delete_if_corrupt)
    elif suffix == ".jsonl":
        yield from _read_jsonl(path)
    elif suffix in (".txt", ".md"):
        yield from _read_text(path)
    else:
        raise UserError(f"{path}: unsupported file type {suffix!r}; "
                        f"use one of {', '.join(DOCUMENT_SUFFIXES)}")


def split_long_text(text: str) -> list[str]:
    """One document, or paragraphs grouped into documents of about CHUNK_CHARS (see module doc)."""
    if len(text) <= LONG_TEXT_CHARS:
        return [text] if text.strip() else []
    documents, current, current_chars = [], [], 0
    for paragraph in _BLANK_LINES.split(text):
        if not paragraph.strip():
            continue
        if current and current_chars + len(paragraph) > CHUNK_CHARS:
            documents.append("\n\n".join(current))
            current, current_chars = [], 0
        current.append(paragraph)
        current_chars += len(paragraph) + 2
    if current:
        documents.append("\n\n".join(current))
    return documents


def _read_text(path: Path) -> Iterator[list[str]]:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None
    yield split_long_text(_decode(raw, path))


def _decode(raw: bytes, where: str | Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{where}: invalid UTF-8 at byte {error.start}; convert the file to UTF-8 "
                        f"(e.g. iconv -t UTF-8) or remove it") from None


def _read_jsonl(path: Path) -> Iterator[list[str]]:
    batch: list[str] = []
    if not os.access(path, os.R_OK):
        raise UserError(f"{path}: cannot read (permission denied)")
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, 1):
            where = f"{path}:{line_number}"
            line = _decode(raw, where)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{where}: not valid JSON ({error.msg}); each line must be an object "
                                f"with a \"text\" field") from None
            text = record.get(TEXT_COLUMN) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise UserError(f"{where}: no string \"text\" field; each line must be an object "
                                f"with a \"text\" field")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(f"{where}: the text holds an unpaired surrogate escape (\\ud8xx); "
                                f"fix or remove the line") from None
            if text.strip():
                batch.append(text)
            if len(batch) >= BATCH_DOCUMENTS:
                yield batch
                batch = []
    if batch:
        yield batch


def _read_parquet(path: Path, delete_if_corrupt: bool) -> Iterator[list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def corrupt(reason: str) -> UserError:
        if delete_if_corrupt:
            path.unlink(missing_ok=True)
            return UserError(f"{path}: corrupt parquet ({reason}); deleted it, rerun prepare to "
                             f"download it again")
        return UserError(f"{path}: not a readable parquet file ({reason}); replace or remove it")

    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
        raise corrupt(_first_line(error)) from None
    if TEXT_COLUMN not in schema.names:
        raise UserError(f"{path}: no {TEXT_COLUMN!r} column (columns: {', '.join(schema.names) or 'none'}); "
                        f"the text must be in a string column named {TEXT_COLUMN!r}")
    column_type = schema.field(TEXT_COLUMN).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise UserError(f"{path}: the {TEXT_COLUMN!r} column holds {column_type}, not strings")
    batches = parquet.iter_batches(batch_size=BATCH_DOCUMENTS, columns=[TEXT_COLUMN])
    while True:
        try:
            record_batch = next(batches, None)
        except Exception as error:  # damaged pages surface here, as several pyarrow error types
            raise corrupt(_first_line(error)) from None
        if record_batch is None:
            return
        batch = [text for text in record_batch.column(0).to_pylist() if text and not text.isspace()]
        if batch:
            yield batch


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
