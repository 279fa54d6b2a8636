"""Train the byte-level BPE tokenizer with rustbpe and turn it into a `layout.TokenizerSpec`.

The split pattern is GPT-4's, except that numbers split into runs of at most two digits (as in
the reference). The merges are learned from the train split only, as the reference does: each
document cut to its first DOCUMENT_CHARS characters, documents taken in order until at least
`max_chars` characters were handed out (1 B by default; the document that crosses the limit is
handed out whole, up to its cut), so one huge document cannot dominate and the training time
stays bounded on big corpora. The four special tokens <|reserved_0..3|> get the ids right after
the last merge; <|reserved_0|> is BOS.

What this does NOT protect against: a corpus too small or too repetitive to supply the
requested number of merges; rustbpe then stops early and the tokenizer is smaller than asked
(the caller reports it and records the real size). Training is deterministic for the same
texts in the same order (checked by a test), but not across rustbpe versions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from autoresearch.data import layout
from autoresearch.errors import UserError

SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
MIN_VOCAB_SIZE = 256 + len(layout.SPECIAL_TOKENS)  # every byte, plus the special tokens
MAX_VOCAB_SIZE = 1 << 20
DEFAULT_VOCAB_SIZE = 8192
DEFAULT_MAX_CHARS = 1_000_000_000  # the reference's text_iterator(max_chars=1_000_000_000)
DOCUMENT_CHARS = 10_000


def check_vocab_size(vocab_size: int) -> None:
    if not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise UserError(f"--vocab-size {vocab_size} is out of range; use {MIN_VOCAB_SIZE} to "
                        f"{MAX_VOCAB_SIZE:,} (8192 is the usual choice)")


def capped_texts(batches: Iterable[list[str]], max_chars: int, on_chars: Callable[[int], None] | None = None,
                 document_chars: int = DOCUMENT_CHARS) -> Iterator[str]:
    """The documents of `batches`, each cut to `document_chars`, until `max_chars` are handed out
    (the last one whole, as in the reference)."""
    handed_out = 0
    for batch in batches:
        for text in batch:
            piece = text[:document_chars]
            handed_out += len(piece)
            if on_chars is not None:
                on_chars(len(piece))
            yield piece
            if handed_out >= max_chars:
                return


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> layout.TokenizerSpec:
    """Learn `vocab_size - len(SPECIAL_TOKENS)` ranks (or fewer, if the texts run out of pairs)."""
    import rustbpe

    check_vocab_size(vocab_size)
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(texts), vocab_size - len(layout.SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    ranked = sorted(trainer.get_mergeable_ranks(), key=lambda pair: pair[1])
    ranks = [bytes(token) for token, _ in ranked]
    assert [rank for _, rank in ranked] == list(range(len(ranks))), "rustbpe ranks are not 0..n-1"
    special_tokens = layout.special_token_ids(len(ranks))
    return layout.TokenizerSpec(pattern=trainer.get_pattern(), ranks=ranks, special_tokens=special_tokens)
