"""The price tables and the cost arithmetic: values pinned to the pages in pricing.py's comments."""

from __future__ import annotations

import pytest

from autoresearch.agent.pricing import ANTHROPIC_PRICES, configured_prices, cost_usd, price_for
from autoresearch.errors import UserError
from autoresearch.runconfig import load_config

# (model, input, output, 5m write, 1h write, cache read), USD per million tokens, as read on the
# model pages named in pricing.py (platform.claude.com/docs/en/models/<id>/overview and .../pricing).
DOCUMENTED = [
    ("claude-sonnet-5-5", 2.0, 10.0, 2.50, 4.0, 0.20),  # the default model: cache read $0.20, not $0.10
    ("claude-sonnet-5", 2.0, 10.0, 2.50, 4.0, 0.20),
    ("claude-opus-5-5", 4.0, 20.0, 5.0, 8.0, 0.20),
    ("claude-opus-5", 5.0, 25.0, 6.25, 10.0, 0.50),
    ("claude-opus-4-6", 5.0, 25.0, 6.25, 10.0, 0.50),
    ("claude-opus-4-1", 15.0, 75.0, 18.75, 30.0, 1.50),
    ("claude-sonnet-4-5", 3.0, 15.0, 3.75, 6.0, 0.30),
    ("claude-haiku-4-5", 1.0, 5.0, 1.25, 2.0, 0.10),
    ("claude-haiku-5-5", 0.10, 0.50, 0.125, 0.20, 0.01),
]


@pytest.mark.parametrize("model, input_price, output, write_5m, write_1h, read", DOCUMENTED)
def test_table_values_are_the_documented_ones(model, input_price, output, write_5m, write_1h, read):
    prices = ANTHROPIC_PRICES[model]
    assert (prices.input, prices.output, prices.cache_write_5m, prices.cache_write_1h, prices.cache_read) == \
        pytest.approx((input_price, output, write_5m, write_1h, read))


def test_snapshots_match_their_model_and_nothing_else_is_guessed():
    assert price_for("claude-haiku-4-5-20251001") == ANTHROPIC_PRICES["claude-haiku-4-5"]
    assert price_for("claude-sonnet-4-5@20250929") == ANTHROPIC_PRICES["claude-sonnet-4-5"]
    for unknown in ("claude-sonnet-5-7", "claude-opus-5-5-fast", "claude-next", "gpt-5.5", "qwen3-coder"):
        assert price_for(unknown) is None, unknown


def test_the_long_context_tier_applies_above_its_threshold():
    haiku = ANTHROPIC_PRICES["claude-haiku-5-5"]
    short = cost_usd(haiku, input_tokens=100_000, output_tokens=1000)
    assert short == pytest.approx((100_000 * 0.10 + 1000 * 0.50) / 1e6)
    # one token more of prompt (a cache read counts as prompt): the whole request at the long rates
    long = cost_usd(haiku, input_tokens=100_000, output_tokens=1000, cache_read_tokens=1)
    assert long == pytest.approx((100_000 * 0.50 + 1000 * 2.50 + 1 * 0.05) / 1e6)


def test_configured_prices_err_high_where_they_are_silent():
    anthropic = configured_prices(3.0, 15.0)
    assert (anthropic.cache_read, anthropic.cache_write_5m, anthropic.cache_write_1h) == (3.0, 6.0, 6.0)
    openai = configured_prices(0.5, 1.5, provider="openai")
    assert (openai.cache_read, openai.cache_write_5m) == (0.5, 0.5)
    assert configured_prices(0.5, None) is None
    assert price_for("claude-sonnet-5-5", configured_prices(9.0, 9.0)).input == 9.0  # the config wins


def test_prices_and_agent_settings_come_from_pyproject_with_one_line_errors(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.autoresearch]\nagent = "command"\nagent-command = "codex exec -"\n'
                                             'agent-timeout = 600\nprice-input = 0.4\nprice-output = 1.6\n')
    config = load_config({}, project_dir=tmp_path, environ={})
    assert (config.agent, config.agent_command, config.agent_timeout) == ("command", "codex exec -", 600.0)
    assert (config.price_input, config.price_output) == (0.4, 1.6)
    assert config.summary()["agent_command"] == "codex exec -"
    with pytest.raises(UserError, match="--agent command needs --agent-command"):
        load_config({"agent": "command", "agent_command": " "}, project_dir=tmp_path / "none", environ={})
    with pytest.raises(UserError, match="--agent-command: is only used with --agent command"):
        load_config({"agent": "claude", "agent_command": "x"}, project_dir=tmp_path / "none", environ={})
    with pytest.raises(UserError, match="price-input and price-output are given together"):
        load_config({"price_input": 1.0}, project_dir=tmp_path / "none", environ={})
    with pytest.raises(UserError, match="--agent-timeout: must be greater than 0"):
        load_config({"agent": "command", "agent_command": "x", "agent_timeout": 0},
                    project_dir=tmp_path / "none", environ={})
