"""Picking a proposer by name: `claude`, `offline`, or `auto` (claude when an API key is set).

What this does not do: check that the key works or the model exists; the first request does
that and turns a refusal into a one-line UserError.
"""

from __future__ import annotations

import os
from pathlib import Path

from autoresearch.agent.base import Proposer
from autoresearch.errors import UserError

PROPOSER_NAMES = ("auto", "claude", "offline")
KEY_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


def _has_key() -> bool:
    return any(os.environ.get(name) for name in KEY_VARIABLES)


def create_proposer(name: str, *, model: str | None = None, seed: int = 0,
                    notes_path: Path | None = None) -> Proposer:
    """The proposer called `name`; `model` falls back to $AUTORESEARCH_MODEL, then the default."""
    if name == "auto":
        name = "claude" if _has_key() else "offline"
    if name == "claude":
        if not _has_key():
            raise UserError("--agent claude needs an Anthropic API key: set ANTHROPIC_API_KEY "
                            "(or use --agent offline, which needs no LLM)")
        from autoresearch.agent.claude import ClaudeProposer, default_model  # the SDK loads only when needed

        return ClaudeProposer(model or default_model(), notes_path=notes_path)
    if name == "offline":
        from autoresearch.agent.offline import OfflineProposer

        return OfflineProposer(seed=seed)
    raise UserError(f"unknown agent {name!r}; choose one of: {', '.join(PROPOSER_NAMES)}")
