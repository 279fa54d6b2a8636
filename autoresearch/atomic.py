"""Writing files so that a crash never leaves them torn.

`write_text_atomic` writes the whole text to a temporary file beside the target
(`.<name>.<random>.tmp`, created exclusively), fsyncs it and moves it over the target with
`os.replace`, so a reader sees the old file or the new one, never half of one; on any error the
temporary file is removed. The new file keeps the replaced file's permission bits (a user's
`chmod` survives the rewrite); a file that did not exist gets what `open(path, "w")` would give
it under the process's umask, unless `mode` says otherwise. `write_json_atomic` is the same for a
JSON document (indented, keys sorted, one trailing newline). Every JSON the harness writes goes
through `strict_json_dumps`: a float that is not finite (NaN, infinity) is written as `null`, so
any strict parser (Node's JSON.parse, jq, Go's encoding/json) reads the records.

What this does not protect against: a crash that loses the directory entry itself (the directory
is not fsynced), a power failure on a file system that reorders the rename before the data, two
writers racing on the same path (the last replace wins), or a temporary file left behind when the
process is killed outright between creating and renaming it.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path


def write_text_atomic(path: Path, text: str, *, mode: int | None = None) -> None:
    """Replace `path` with `text` (UTF-8) in one step; `mode` None keeps an existing file's mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None and path.exists():
        mode = path.stat().st_mode & 0o777
    descriptor, temporary = _create_beside(path)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: dict) -> None:
    """Replace `path` with `payload` as indented, key-sorted strict JSON and a trailing newline."""
    write_text_atomic(path, strict_json_dumps(payload, indent=2) + "\n")


def finite_or_null(value: object) -> object:
    """`value` with every non-finite float (NaN, +-inf), however deeply nested, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value


def strict_json_dumps(payload: object, *, indent: int | None = None) -> str:
    """JSON that strict parsers accept: keys sorted, non-finite floats as null (never `NaN`)."""
    return json.dumps(finite_or_null(payload), indent=indent, sort_keys=True, allow_nan=False)


def _create_beside(path: Path) -> tuple[int, Path]:
    """Create a new, empty temporary file in `path`'s directory (0o666 less the umask, as open does)."""
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temporary
        except FileExistsError:  # a name already taken: draw another
            continue
