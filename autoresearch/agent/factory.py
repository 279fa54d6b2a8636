"""Picking a proposer by name, and the checks made before a run's baseline trains.

`create_proposer(name, ...)` builds one of `PROPOSER_NAMES`: `claude` (the Messages API),
`openai` (any OpenAI-compatible Chat Completions endpoint), `command` (a coding-agent CLI),
`offline` (no LLM), or `auto` (claude when an Anthropic key is set, else offline).
`proposer_for(config)` builds the one a `RunConfig` names, with its prices and command settings.
`prepare_proposer(config, proposer)` is what a run calls first: it refuses `--max-cost` for an
agent whose cost is unknown, then makes the agent's fail-fast `check()` (key, endpoint, model;
or the command's program), so a wrong setting is one line within seconds, not after the baseline.
`AGENTS` describes every agent for `autoresearch agents`.

What this does not do: prove that a model is any good at the task (a dry proposal does:
`autoresearch propose`), or check an agent again later in the night (outages are retried).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autoresearch.agent.base import Proposer
from autoresearch.agent.pricing import Prices, configured_prices
from autoresearch.errors import UserError

if TYPE_CHECKING:
    from autoresearch.runconfig import RunConfig

PROPOSER_NAMES = ("auto", "claude", "openai", "command", "offline")
KEY_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


@dataclass(frozen=True)
class AgentInfo:
    name: str
    summary: str
    needs: str
    setup: str  # a one-line example


AGENTS = (
    AgentInfo("claude", "Claude through the Anthropic Messages API, with the text editor tool",
              "ANTHROPIC_API_KEY (ANTHROPIC_BASE_URL for a gateway); --model, default claude-sonnet-5-5",
              "ANTHROPIC_API_KEY=sk-ant-... autoresearch run --agent claude"),
    AgentInfo("openai", "any OpenAI-compatible Chat Completions endpoint: OpenAI, vLLM, Ollama, LM Studio, "
              "llama.cpp's server, OpenRouter",
              "pip install 'autoresearch[openai]'; --model; OPENAI_API_KEY and/or OPENAI_BASE_URL",
              "OPENAI_BASE_URL=http://localhost:8000/v1 autoresearch run --agent openai --model Qwen/Qwen3-Coder"),
    AgentInfo("command", "a coding-agent CLI run once per proposal in the worktree (briefing on stdin "
              "and in $AUTORESEARCH_BRIEFING)",
              "--agent-command '...'; the CLI's own login or key; --agent-timeout (default 1800 s)",
              "autoresearch run --agent command --agent-command 'claude -p --permission-mode acceptEdits'"),
    AgentInfo("offline", "mutates the hyperparameter block of train.py with no LLM (a smoke test)", "nothing",
              "autoresearch run --agent offline"),
    AgentInfo("auto", "claude when an Anthropic key is set, else offline", "-", "autoresearch run"),
)


def _has_key() -> bool:
    return any(os.environ.get(name) for name in KEY_VARIABLES)


def create_proposer(name: str, *, model: str | None = None, seed: int = 0, notes_path: Path | None = None,
                    prices: Prices | None = None, command: str | None = None,
                    command_timeout: float | None = None, allowed_env: tuple[str, ...] = (),
                    data_dir: Path | None = None) -> Proposer:
    """The proposer called `name`; `model` falls back to $AUTORESEARCH_MODEL, then the agent's default."""
    if name == "auto":
        name = "claude" if _has_key() else "offline"
    if name == "claude":
        if not _has_key():
            raise UserError("--agent claude needs an Anthropic API key: set ANTHROPIC_API_KEY "
                            "(or use --agent offline, which needs no LLM)")
        from autoresearch.agent.claude import ClaudeProposer, default_model  # the SDK loads only when needed

        return ClaudeProposer(model or default_model(), notes_path=notes_path, prices=prices)
    if name == "openai":
        try:
            from autoresearch.agent.openai_chat import OpenAIProposer
        except ImportError:
            raise UserError("--agent openai needs the openai package: pip install 'autoresearch[openai]'") from None
        return OpenAIProposer(model or os.environ.get("AUTORESEARCH_MODEL") or "", notes_path=notes_path,
                              prices=prices)
    if name == "command":
        from autoresearch.agent.command import DEFAULT_TIMEOUT, CommandProposer

        return CommandProposer(command or "", timeout=command_timeout or DEFAULT_TIMEOUT, allowed_env=allowed_env,
                               data_dir=data_dir)  # the dataset its sandbox closes
    if name == "offline":
        from autoresearch.agent.offline import OfflineProposer

        return OfflineProposer(seed=seed)
    raise UserError(f"unknown agent {name!r}; choose one of: {', '.join(PROPOSER_NAMES)}")


def proposer_for(config: RunConfig, notes_path: Path | None = None) -> Proposer:
    """The proposer a run's settings name, with their model, prices and command settings."""
    provider = "openai" if config.agent == "openai" else "anthropic"
    prices = configured_prices(config.price_input, config.price_output, config.price_cache_read,
                               config.price_cache_write, provider=provider)
    allowed = tuple((config.agent_env or "").split(","))
    return create_proposer(config.agent, model=config.model, seed=config.seed, notes_path=notes_path,
                           prices=prices, command=config.agent_command, command_timeout=config.agent_timeout,
                           allowed_env=allowed, data_dir=config.data_dir)


def prepare_proposer(config: RunConfig, proposer: Proposer | None, *, notes_path: Path | None = None) -> Proposer:
    """The run's proposer, built if not given, after the checks that must pass before the baseline."""
    proposer = proposer if proposer is not None else proposer_for(config, notes_path)
    unknown = getattr(proposer, "cost_unknown_reason", None)
    reason = unknown() if callable(unknown) else None
    if config.max_cost is not None and reason:
        raise UserError(f"--max-cost ${config.max_cost:g} cannot be enforced: {reason}")
    check = getattr(proposer, "check", None)
    if callable(check):
        check()
    return proposer
