"""What a Claude call costs: a per-model price table and the arithmetic on a response's usage.

Prices are USD per million tokens from Anthropic's pricing page
(platform.claude.com/docs/en/about-claude/pricing and the per-model overview pages), checked
2026-11. A model ID matches the longest table key it starts with, so dated IDs
(`claude-haiku-4-5-20251001`) find their family. An unknown model is priced at the most expensive
rates in the table (the estimate errs high, never low) and `price_for` says it was a guess.

What this does not capture: batch and fast-mode discounts or surcharges, long-context tiers
(Haiku 5.5 is priced at its <=100k-token-prompt tier), data-residency multipliers, server tool
fees, and price changes after the date above. The number is an estimate for the run's report,
not an invoice.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prices:
    """USD per million tokens."""

    input: float
    output: float
    cache_write_5m: float  # 1.25x input on every current model
    cache_write_1h: float  # 2x input
    cache_read: float  # 0.1x input, less on a few newer models


def _standard(input_price: float, output_price: float, cache_read: float | None = None) -> Prices:
    return Prices(input_price, output_price, input_price * 1.25, input_price * 2.0,
                  input_price * 0.1 if cache_read is None else cache_read)


PRICES: dict[str, Prices] = {
    "claude-fable-5-1": _standard(10.0, 50.0, cache_read=0.25),
    "claude-mythos-5-1": _standard(10.0, 50.0, cache_read=0.25),
    "claude-fable-5": _standard(10.0, 50.0),
    "claude-mythos-5": _standard(10.0, 50.0),
    "claude-opus-5-5": _standard(4.0, 20.0, cache_read=0.20),
    "claude-opus-5": _standard(5.0, 25.0),
    "claude-opus-4-8": _standard(5.0, 25.0),
    "claude-opus-4-7": _standard(5.0, 25.0),
    "claude-opus-4-6": _standard(5.0, 25.0),
    "claude-opus-4-5": _standard(5.0, 25.0),
    "claude-opus-4-1": _standard(15.0, 75.0),
    "claude-opus-4": _standard(15.0, 75.0),
    "claude-sonnet-5-5": _standard(2.0, 10.0, cache_read=0.10),
    "claude-sonnet-5": _standard(2.0, 10.0),
    "claude-sonnet-4-6": _standard(3.0, 15.0),
    "claude-sonnet-4-5": _standard(3.0, 15.0),
    "claude-sonnet-4": _standard(3.0, 15.0),
    "claude-haiku-5-5": _standard(0.10, 0.50, cache_read=0.01),
    "claude-haiku-4-5": _standard(1.0, 5.0),
}

# The most expensive rates in the table: an unknown model's estimate errs high.
UNKNOWN_MODEL_PRICES = Prices(
    input=max(p.input for p in PRICES.values()),
    output=max(p.output for p in PRICES.values()),
    cache_write_5m=max(p.cache_write_5m for p in PRICES.values()),
    cache_write_1h=max(p.cache_write_1h for p in PRICES.values()),
    cache_read=max(p.cache_read for p in PRICES.values()),
)


def price_for(model: str) -> tuple[Prices, str | None]:
    """The model's prices, and a note when the model is not in the table (None when it is)."""
    matches = [key for key in PRICES if model == key or model.startswith((key + "-", key + "@"))]
    if matches:
        return PRICES[max(matches, key=len)], None
    return UNKNOWN_MODEL_PRICES, (f"model {model!r} is not in the price table; its cost is estimated at the "
                                  f"highest known rates (${UNKNOWN_MODEL_PRICES.input:g}/"
                                  f"${UNKNOWN_MODEL_PRICES.output:g} per million input/output tokens)")


def cost_usd(model: str, *, input_tokens: int, output_tokens: int, cache_read_tokens: int = 0,
             cache_write_5m_tokens: int = 0, cache_write_1h_tokens: int = 0) -> float:
    prices, _ = price_for(model)
    return (input_tokens * prices.input + output_tokens * prices.output
            + cache_read_tokens * prices.cache_read + cache_write_5m_tokens * prices.cache_write_5m
            + cache_write_1h_tokens * prices.cache_write_1h) / 1_000_000
