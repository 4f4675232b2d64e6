"""Cost per model from data/model-prices.yaml, and token estimates when a server sends none."""

import logging
import os

import pytest

from assistant.config import PROJECT_ROOT
from assistant.llm import (
    PriceTable,
    TokenCounter,
    bundled_model_path,
    llama_cpp_installed,
)

PRICES = PriceTable.load(PROJECT_ROOT / "data" / "model-prices.yaml")


@pytest.mark.parametrize(
    ("provider", "model", "usd_in", "usd_out"),
    [
        ("openai", "gpt-4o-mini", 0.15, 0.60),
        # The dated name the API answers with is priced like its family.
        ("openai", "gpt-4o-mini-2024-07-18", 0.15, 0.60),
        ("openai", "GPT-4o-Mini", 0.15, 0.60),
        # A router's "vendor/model" name.
        ("openai", "openai/gpt-4o-mini", 0.15, 0.60),
        ("openai", "gpt-4o", 2.50, 10.00),
        ("openai", "gpt-4o-2024-08-06", 2.50, 10.00),
        ("openai", "gpt-4.1-nano", 0.10, 0.40),
        ("openai", "gpt-4.1-mini", 0.40, 1.60),
        ("openai", "gpt-4.1", 2.00, 8.00),
        ("openai", "gpt-5-mini", 0.25, 2.00),
        ("openai", "gpt-3.5-turbo-0125", 0.50, 1.50),
        ("openai", "o3-mini", 1.10, 4.40),
        # Served on one's own hardware: free, whatever the name.
        ("ollama", "gpt-4o", 0.0, 0.0),
        ("ollama", "phi3", 0.0, 0.0),
        ("local", "SmolLM2-135M-Instruct.Q8_0", 0.0, 0.0),
        ("extractive", "extractive", 0.0, 0.0),
    ],
)
def test_cost_for_a_table_of_models(provider, model, usd_in, usd_out):
    expected = (12_000 * usd_in + 3_000 * usd_out) / 1_000_000
    assert PRICES.cost(provider, model, 12_000, 3_000) == pytest.approx(expected, abs=1e-12)


def test_a_million_tokens_each_way_costs_the_listed_prices():
    assert PRICES.cost("openai", "gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)


def test_unknown_model_costs_zero_and_is_logged_once(caplog):
    table = PriceTable.load(PROJECT_ROOT / "data" / "model-prices.yaml")
    with caplog.at_level(logging.WARNING, logger="assistant.llm"):
        assert table.cost("openai", "my-finetune", 1000, 1000) == 0.0
        assert table.cost("openai", "my-finetune", 1000, 1000) == 0.0
    assert [r.getMessage() for r in caplog.records].count(
        "no price for model 'my-finetune' in the price table: cost recorded as 0"
    ) == 1


def test_every_family_comes_after_its_specific_names():
    """First match wins: no pattern may be shadowed by a broader one listed above it."""
    for price in PRICES.prices:
        assert PRICES.price(price.pattern.rstrip("*")) == price, f"{price.pattern} is shadowed"
        assert price.input > 0 and price.output > 0


def test_missing_price_file_means_zero_cost(tmp_path):
    table = PriceTable.load(tmp_path / "absent.yaml")
    assert table.prices == [] and table.cost("openai", "gpt-4o", 10, 10) == 0.0


def test_estimate_without_a_tokenizer_is_about_four_characters_a_token():
    counter = TokenCounter(None)
    assert counter.count("") == 0
    assert counter.count("abcdefgh") == 2 and counter.count("abcdefghi") == 3
    messages = [{"role": "user", "content": "abcdefgh"}, {"role": "system", "content": ""}]
    assert counter.count_messages(messages) == 2 + 4 + 0 + 4


def test_estimate_with_the_bundled_tokenizer():
    if not (llama_cpp_installed() and bundled_model_path()):
        message = "the [local] extra is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must install it")
        pytest.skip(message)
    counter = TokenCounter(bundled_model_path())
    text = "How do I cancel my subscription and get a refund?"
    assert 8 <= counter.count(text) <= 16
    assert counter.count(text * 10) > 9 * counter.count(text)
