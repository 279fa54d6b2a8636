"""`prepare`: turn a source into a prepared dataset, atomically and only when needed.

The steps, in order:

1. resolve the source and its identity; if `<datasets>/<name>` already holds a dataset that
   verifies and was built from the same identity and parameters, return it (nothing is redone);
2. fetch the inputs (downloads are reused when already present and valid);
3. for sources without pinned splits, read every document once to assign it to train / val /
   holdout by the hash of its text (`split`);
4. train the BPE tokenizer on (a bounded prefix of) the train documents (`bpe`);
5. tokenize every document on all cores and write the splits incrementally (`encode`);
6. hash everything and write the manifest last (`manifest`);
7. move the finished directory into place with os.replace.

Everything is built in `<datasets>/.<name>.partial-<pid>` next to the target, so a crash,
Ctrl-C or full disk never leaves a directory at the target path that looks complete; leftovers
of dead processes are removed on the next run. Output is deterministic: the same inputs and
parameters give byte-identical files.

What this does NOT protect against: two `prepare` runs building the same name at the same time
(both build; the last one to finish wins, and both results are complete datasets), and a
target directory that some other program is reading while it is replaced.
"""

from __future__ import annotations

import array
import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from autoresearch import contract
from autoresearch.data import bpe, layout, sample, sources
from autoresearch.data import split as splitting
from autoresearch.data.encode import SplitWriter
from autoresearch.data.manifest import seal_dataset, verify_dataset
from autoresearch.data.progress import Reporter
from autoresearch.errors import UserError
from autoresearch.runner import pid_alive

_SPLIT_CODES = {name: code for code, name in enumerate(contract.SPLITS)}


def prepare_dataset(source: str = "climbmix", *, name: str | None = None,
                    num_shards: int = sources.DEFAULT_NUM_SHARDS, vocab_size: int = bpe.DEFAULT_VOCAB_SIZE,
                    base_url: str | None = None, force: bool = False, show_progress: bool = True,
                    cache_dir: Path | None = None, tokenizer_chars: int = bpe.DEFAULT_MAX_CHARS,
                    val_fraction: float = splitting.DEFAULT_VAL_FRACTION,
                    holdout_fraction: float = splitting.DEFAULT_HOLDOUT_FRACTION,
                    last_shard: int = sources.CLIMBMIX_LAST_SHARD,
                    sample_chars: int = sample.DEFAULT_TARGET_CHARS) -> Path:
    """Build (or find already built) the dataset `name` from `source`; returns its directory.

    The cache root is `cache_dir`, else contract.cache_dir() ($AUTORESEARCH_CACHE_DIR).
    """
    bpe.check_vocab_size(vocab_size)
    if tokenizer_chars < 1:
        raise UserError(f"--tokenizer-chars {tokenizer_chars} must be positive "
                        f"(default {bpe.DEFAULT_MAX_CHARS:,})")
    splitting.check_fractions(val_fraction, holdout_fraction)
    root = Path(cache_dir).expanduser() if cache_dir is not None else contract.cache_dir()
    reporter = Reporter(show=show_progress)
    try:
        the_source = sources.resolve_source(source, num_shards=num_shards, base_url=base_url,
                                            last_shard=last_shard, downloads=root / "downloads",
                                            sample_chars=sample_chars)
        name = _check_name(name if name is not None else the_source.default_name)
        target = root / "datasets" / name
        parameters = {
            "source": the_source.identity(),
            "vocab_size": vocab_size,
            "tokenizer_chars": tokenizer_chars,
            "tokenizer_document_chars": bpe.DOCUMENT_CHARS,
            "split_pattern": bpe.SPLIT_PATTERN,
        }
        if the_source.splits_by_document:  # pinned shards ignore the fractions
            parameters.update(val_fraction=val_fraction, holdout_fraction=holdout_fraction)
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_leftovers(target)
        if not force and _up_to_date(target, parameters, reporter):
            reporter.note(f"dataset {name!r} is up to date: {target}")
            return target
        partial = target.parent / f".{name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.mkdir()
            body = _build(the_source, partial, name, parameters, reporter)
            seal_dataset(partial, body)
            _install(partial, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"disk full while writing under {root} ({error.filename or 'a data file'}); "
                            f"free some space or point --cache-dir / AUTORESEARCH_CACHE_DIR at a bigger "
                            f"disk") from None
        raise
    reporter.note(f"dataset {name!r} ready: {target}")
    return target


# --- Steps ---------------------------------------------------------------------------------------


def _build(the_source: sources.Source, out: Path, name: str, parameters: dict, reporter: Reporter) -> dict:
    parts = the_source.fetch(reporter)
    codes, offsets, lengths = _assign_documents(parts, parameters, reporter)
    train_total = all_total = None  # known in advance only when every document was read once already
    if codes is not None:
        all_total = int(lengths.sum())
        capped = np.minimum(lengths[codes == splitting.TRAIN], bpe.DOCUMENT_CHARS)
        train_total = min(int(capped.sum()), parameters["tokenizer_chars"])

    # Tokenizer: train documents only, bounded by tokenizer_chars.
    with reporter.stage("train tokenizer", total=train_total, unit="chars") as stage:
        trained_on = {"documents": 0, "characters": 0}

        def count(chars: int) -> None:
            trained_on["documents"] += 1
            trained_on["characters"] += chars
            stage.advance(chars)

        train_batches = (batch for split, batch in _routed_batches(parts, codes, offsets, only="train"))
        texts = bpe.capped_texts(train_batches, parameters["tokenizer_chars"], on_chars=count)
        spec = bpe.train_tokenizer(texts, parameters["vocab_size"])
    if trained_on["documents"] == 0:
        raise UserError(f"the train split of {name!r} has no text; check the input files")
    if spec.vocab_size < parameters["vocab_size"]:
        reporter.note(f"note: the training text only supports {spec.vocab_size:,} tokens (asked for "
                      f"{parameters['vocab_size']:,}); the tokenizer has {spec.vocab_size:,}")
    layout.write_tokenizer(out, spec)

    # Tokenize every split in one pass over the inputs.
    dtype = layout.token_dtype(spec.vocab_size)
    encoding = spec.encoding()
    writers = {split: SplitWriter(out, split, encoding, spec.bos_id, dtype) for split in contract.SPLITS}
    try:
        with reporter.stage("tokenize", total=all_total, unit="chars") as stage:
            for split, batch in _routed_batches(parts, codes, offsets):
                writer = writers[split]
                for text in batch:
                    stage.advance(writer.add(text))
            counts = {}
            for split, writer in writers.items():
                before = writer.counts.characters
                counts[split] = writer.close().as_dict()
                stage.advance(counts[split]["characters"] - before)
    finally:
        for writer in writers.values():
            writer.abort()
    empty = [split for split, numbers in counts.items() if numbers["documents"] == 0]
    if empty:
        raise UserError(f"the {' and '.join(empty)} split(s) of {name!r} came out empty; "
                        f"check the input files")

    inputs = []
    for part in parts:
        entry = {"file": part.label, "split": part.split or "by-document-hash"}
        if part.path is not None:
            entry.update(sources.file_fingerprint(part.path))
        inputs.append(entry)
    return {
        "name": name,
        "parameters": parameters,
        "inputs": inputs,
        "vocab_size": spec.vocab_size,
        "bos_id": spec.bos_id,
        "token_dtype": dtype.name,
        "splits": counts,
        "tokenizer_training": trained_on,
    }


def _assign_documents(parts: list[sources.Part], parameters: dict,
                      reporter: Reporter) -> tuple[np.ndarray | None, list[int], np.ndarray | None]:
    """Split codes of the documents of the unpinned parts (in reading order), where each part's
    codes start, and each document's length in characters; (None, [], None) when every part is
    pinned to a split."""
    unpinned = [part for part in parts if part.split is None]
    if not unpinned:
        return None, [], None
    keys = array.array("Q")  # 8 bytes a document, however many there are
    lengths = array.array("Q")
    offsets: list[int] = []
    with reporter.stage("read and split documents", total=None, unit="docs") as stage:
        for part in parts:
            offsets.append(len(keys))
            if part.split is not None:
                continue
            for batch in part.documents():
                keys.extend(splitting.document_key(text) for text in batch)
                lengths.extend(len(text) for text in batch)
                stage.advance(len(batch))
    where = ", ".join(part.label for part in unpinned[:3]) + (" ..." if len(unpinned) > 3 else "")
    if len(keys) == 0:
        raise UserError(f"no text found in {where}: the corpus is empty")
    codes = splitting.assign_splits(np.frombuffer(keys, dtype=np.uint64), parameters["val_fraction"],
                                    parameters["holdout_fraction"], where=f"the corpus ({where})")
    return codes, offsets, np.frombuffer(lengths, dtype=np.uint64)


def _routed_batches(parts: list[sources.Part], codes: np.ndarray | None, offsets: list[int],
                    only: str | None = None) -> Iterator[tuple[str, list[str]]]:
    """(split, documents) for every batch of every part, in reading order; with `only`, just that split."""
    for index, part in enumerate(parts):
        if part.split is not None:
            if only is None or part.split == only:
                for batch in part.documents():
                    yield part.split, batch
            continue
        position = offsets[index]
        for batch in part.documents():
            batch_codes = codes[position : position + len(batch)]
            if len(batch_codes) != len(batch):
                raise UserError(f"{part.label} changed while prepare was reading it; run prepare again")
            position += len(batch)
            for split in contract.SPLITS if only is None else (only,):
                code = _SPLIT_CODES[split]
                selected = [text for text, text_code in zip(batch, batch_codes, strict=True)
                            if text_code == code]
                if selected:
                    yield split, selected


# --- Directories ----------------------------------------------------------------------------------


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"--name {name!r} is not usable as a dataset name; use letters, digits, '-', '_' "
                        f"or '.', starting with a letter or digit")
    return name


def _up_to_date(target: Path, parameters: dict, reporter: Reporter) -> bool:
    if not target.exists():
        return False
    try:
        manifest = verify_dataset(target)
    except UserError as problem:
        reporter.note(f"rebuilding: {problem}")
        return False
    if manifest.get("parameters") != parameters:
        reporter.note(f"rebuilding {target.name!r}: its source or parameters differ from this request")
        return False
    return True


def _install(partial: Path, target: Path) -> None:
    """Move the finished `partial` to `target`, replacing an older dataset there."""
    if not target.exists():
        os.replace(partial, target)
        return
    retired = target.parent / f".{target.name}.old-{os.getpid()}"
    shutil.rmtree(retired, ignore_errors=True)
    os.replace(target, retired)
    os.replace(partial, target)
    shutil.rmtree(retired, ignore_errors=True)


def _remove_stale_leftovers(target: Path) -> None:
    """Delete `.<name>.partial-<pid>` / `.<name>.old-<pid>` directories of processes that are gone."""
    prefix = f".{target.name}."
    for leftover in target.parent.iterdir():
        if not leftover.name.startswith(prefix):
            continue
        kind, _, pid_text = leftover.name[len(prefix) :].rpartition("-")
        if kind not in ("partial", "old") or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid() or not pid_alive(pid):
            shutil.rmtree(leftover, ignore_errors=True)
