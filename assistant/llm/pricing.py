"""Cost: model prices from `data/model-prices.yaml` (USD per million tokens, glob patterns by
model name)."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from assistant.llm.base import FREE_PROVIDERS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Price:
    """USD per million `input` (prompt) and `output` (completion) tokens for the models whose
    name matches the glob `pattern`."""

    pattern: str
    input: float
    output: float


class PriceTable:
    """USD per million input and output tokens by model-name pattern; first match wins."""

    def __init__(self, prices: Sequence[Price] = ()):
        self.prices = list(prices)
        self._unpriced_logged: set[str] = set()

    @classmethod
    def load(cls, path: Path) -> PriceTable:
        """The table in the YAML file at `path` (a `models` list of pattern, input, output);
        empty, with a warning, when there is no such file."""
        if not path.is_file():
            log.warning("no price table at %s: every model is recorded at cost 0", path)
            return cls()
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return cls(
            [
                Price(str(row["pattern"]), float(row["input"]), float(row["output"]))
                for row in data.get("models", [])
            ]
        )

    def price(self, model: str) -> Price | None:
        """The first price whose pattern matches `model`, ignoring case and a router's prefix;
        None if none does."""
        # "openai/gpt-4o-mini" (a router's name for it) is priced as gpt-4o-mini.
        name = model.rsplit("/", 1)[-1].lower()
        for price in self.prices:
            if fnmatch.fnmatchcase(name, price.pattern.lower()):
                return price
        return None

    def cost(self, provider: str, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one call; 0 for a provider on the user's own hardware or an unpriced model."""
        if provider in FREE_PROVIDERS:
            return 0.0
        price = self.price(model)
        if price is None:
            if model not in self._unpriced_logged:
                self._unpriced_logged.add(model)
                log.warning("no price for model %r in the price table: cost recorded as 0", model)
            return 0.0
        return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000
