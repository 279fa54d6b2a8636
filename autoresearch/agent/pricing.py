"""What an agent's tokens cost: per-model price tables and the arithmetic on a response's usage.

Prices are USD per million tokens, each pinned in a comment to the provider page it was read
from (read 2026-12-01 through the project's documentation search). `price_for(model)` finds a
model by its exact ID or a dated snapshot of it (`claude-haiku-4-5-20251001`,
`claude-sonnet-4-5@20250929`); any other ID, a new model included, is *unpriced*: its tokens are
still recorded but its cost is unknown (`Usage.cost_known` False), and `--max-cost` refuses to
start with it unless `[tool.autoresearch]` gives prices (`price-input`, `price-output`, ...).
So the estimate errs high, never low: no model is priced at a guessed or a family's rate, a
long prompt is priced at its model's long-context tier when it has one, a cache write whose TTL
the API did not report is priced at the dearer 1-hour rate, and configured prices that leave out
the cache rates price cache reads as fresh input and cache writes at twice the input rate.

What this does not capture: batch and fast-mode rates, data-residency multipliers, server tool
fees, and price changes after the date above. OpenAI's own model pages did not come up in the
search with complete prices, so no OpenAI model is priced here: give its prices in the config.
The number is an estimate for the run's report and for `--max-cost`, not an invoice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MILLION = 1_000_000


@dataclass(frozen=True)
class Prices:
    """USD per million tokens; `long_context` applies to a request whose prompt exceeds the threshold."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    long_context_threshold: int | None = None  # prompt tokens (input + cache reads + writes)
    long_context: Prices | None = None


def _claude(input_price: float, output_price: float, write_5m: float, write_1h: float, cache_read: float,
            **long: object) -> Prices:
    return Prices(input_price, output_price, write_5m, write_1h, cache_read, **long)  # type: ignore[arg-type]


# Anthropic, platform.claude.com. "models/<id>/overview" is the model's page, whose Pricing block
# lists input, output, 5m cache write, 1h cache write and cache read; "pricing" is
# platform.claude.com/docs/about-claude/pricing (its table: base input, 5m and 1h cache writes,
# cache hits & refreshes, output).
ANTHROPIC_PRICES: dict[str, Prices] = {
    # models/fable-5-1/overview: $10 / $50; "cache read cost cut to a quarter" of Fable 5's $1.00.
    "claude-fable-5-1": _claude(10.0, 50.0, 12.50, 20.0, 0.25),
    # models/fable-5/overview: $10 / $50; Mythos 5 "shares Claude Fable 5's specifications and pricing".
    # Cache rates: the pricing page's multipliers (5m 1.25x, 1h 2x, read 0.1x input).
    "claude-fable-5": _claude(10.0, 50.0, 12.50, 20.0, 1.00),
    "claude-mythos-5": _claude(10.0, 50.0, 12.50, 20.0, 1.00),
    # models/opus-5-5/overview: $4 / $20, 5m $5, 1h $8, cache read $0.20.
    "claude-opus-5-5": _claude(4.0, 20.0, 5.0, 8.0, 0.20),
    # models/opus-5/overview: $5 / $25, 5m $6.25, 1h $10, cache read $0.50.
    "claude-opus-5": _claude(5.0, 25.0, 6.25, 10.0, 0.50),
    # models/opus-4-8/overview: $5 / $25; cache rates by the pricing page's multipliers.
    "claude-opus-4-8": _claude(5.0, 25.0, 6.25, 10.0, 0.50),
    # pricing: Opus 4.6 and 4.5 $5 / $6.25 / $10 / $0.50 / $25; Opus 4.1 and 4 $15 / $18.75 / $30 / $1.50 / $75.
    "claude-opus-4-6": _claude(5.0, 25.0, 6.25, 10.0, 0.50),
    "claude-opus-4-5": _claude(5.0, 25.0, 6.25, 10.0, 0.50),
    "claude-opus-4-1": _claude(15.0, 75.0, 18.75, 30.0, 1.50),
    "claude-opus-4": _claude(15.0, 75.0, 18.75, 30.0, 1.50),
    # models/sonnet-5-5/overview and models/sonnet-5/overview: $2 / $10, 5m $2.50, 1h $4, cache read $0.20.
    "claude-sonnet-5-5": _claude(2.0, 10.0, 2.50, 4.0, 0.20),
    "claude-sonnet-5": _claude(2.0, 10.0, 2.50, 4.0, 0.20),
    # pricing: Sonnet 4.6, 4.5 and 4 $3 / $3.75 / $6 / $0.30 / $15 (Sonnet 4.5's page: a 200K context).
    "claude-sonnet-4-6": _claude(3.0, 15.0, 3.75, 6.0, 0.30),
    "claude-sonnet-4-5": _claude(3.0, 15.0, 3.75, 6.0, 0.30),
    "claude-sonnet-4": _claude(3.0, 15.0, 3.75, 6.0, 0.30),
    # models/haiku-5-5/overview: prompts up to 100,000 tokens $0.10 / $0.50, 5m $0.125, 1h $0.20;
    # over 100,000: $0.50 / $2.50, 5m $0.625. Cache reads $0.01 and $0.05 (the same page, as quoted by
    # apidog.com's Haiku 5.5 guide); the long tier's 1h write at the page's 2x input ($1.00).
    "claude-haiku-5-5": _claude(0.10, 0.50, 0.125, 0.20, 0.01, long_context_threshold=100_000,
                                long_context=_claude(0.50, 2.50, 0.625, 1.00, 0.05)),
    # pricing: Haiku 4.5 $1 / $1.25 / $2 / $0.10 / $5.
    "claude-haiku-4-5": _claude(1.0, 5.0, 1.25, 2.0, 0.10),
}

# OpenAI: none confirmed from OpenAI's model pages (see the module docstring). OpenAI-compatible
# servers (vLLM, Ollama, OpenRouter, ...) charge what they charge: configure it.
OPENAI_PRICES: dict[str, Prices] = {}

# A dated snapshot of a table model: "-20251001", "@20251001", or "-2025-10-01".
_SNAPSHOT = re.compile(r"^(?:[-@]\d{8}|-\d{4}-\d{2}-\d{2})$")


def _lookup(table: dict[str, Prices], model: str) -> Prices | None:
    if model in table:
        return table[model]
    for key in sorted(table, key=len, reverse=True):
        if model.startswith(key) and _SNAPSHOT.match(model[len(key):]):
            return table[key]
    return None


def price_for(model: str, configured: Prices | None = None) -> Prices | None:
    """The model's prices: the configured ones if given, else the tables'; None when unpriced."""
    if configured is not None:
        return configured
    return _lookup(ANTHROPIC_PRICES, model) or _lookup(OPENAI_PRICES, model)


def configured_prices(input_price: float | None, output_price: float | None, cache_read: float | None = None,
                      cache_write: float | None = None, *, provider: str = "anthropic") -> Prices | None:
    """Prices from `[tool.autoresearch]` (USD per million tokens); None unless input and output are set.

    Left-out cache rates err high: a cache read is priced as fresh input; a cache write at 2x input
    for Anthropic models (whose writes cost 1.25x-2x) and at the input rate for OpenAI-compatible
    ones (whose usage reports no writes, so a configured write rate prices all fresh input).
    """
    if input_price is None or output_price is None:
        return None
    default_write = 2.0 * input_price if provider == "anthropic" else input_price
    write = cache_write if cache_write is not None else default_write
    return Prices(input_price, output_price, write, write, cache_read if cache_read is not None else input_price)


def unpriced_note(model: str) -> str:
    return (f"model {model!r} has no price in the table, so its cost is unknown (tokens are still recorded); "
            "set price-input and price-output in [tool.autoresearch] to price it")


def cost_usd(prices: Prices, *, input_tokens: int, output_tokens: int, cache_read_tokens: int = 0,
             cache_write_5m_tokens: int = 0, cache_write_1h_tokens: int = 0) -> float:
    """The cost of one request's usage; the long-context tier applies by that request's prompt size."""
    prompt = input_tokens + cache_read_tokens + cache_write_5m_tokens + cache_write_1h_tokens
    if prices.long_context is not None and prices.long_context_threshold is not None \
            and prompt > prices.long_context_threshold:
        prices = prices.long_context
    return (input_tokens * prices.input + output_tokens * prices.output
            + cache_read_tokens * prices.cache_read + cache_write_5m_tokens * prices.cache_write_5m
            + cache_write_1h_tokens * prices.cache_write_1h) / MILLION
