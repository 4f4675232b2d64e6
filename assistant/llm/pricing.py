"""Tokens and cost: model prices from `data/model-prices.yaml` (USD per million tokens, glob
patterns by model name) and token estimates where a provider reports no usage."""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from assistant.llm.base import FREE_PROVIDERS, MESSAGE_OVERHEAD_TOKENS, Message
from assistant.llm.local import (
    bundled_model_path,
    close_at_exit,
    import_llama_cpp,
    llama_cpp_installed,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Price:
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
        # "openai/gpt-4o-mini" (a router's name for it) is priced as gpt-4o-mini.
        name = model.rsplit("/", 1)[-1].lower()
        for price in self.prices:
            if fnmatch.fnmatchcase(name, price.pattern.lower()):
                return price
        return None

    def cost(self, provider: str, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        if provider in FREE_PROVIDERS:
            return 0.0
        price = self.price(model)
        if price is None:
            if model not in self._unpriced_logged:
                self._unpriced_logged.add(model)
                log.warning("no price for model %r in the price table: cost recorded as 0", model)
            return 0.0
        return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000


class TokenCounter:
    """Counts tokens for a server that reports no usage: with the bundled model's tokenizer
    when the `[local]` extra is installed (tiktoken cannot fetch its files offline), else at
    about four characters a token. Either way the caller flags the counts as estimates."""

    def __init__(self, model_path: Path | None):
        self.model_path = model_path
        self._vocab: Any = None
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        if not text:
            return 0
        vocab = self._tokenizer()
        if vocab is None:
            return -(-len(text) // 4)
        with self._lock:
            return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def count_messages(self, messages: Sequence[Message]) -> int:
        return sum(self.count(m.get("content", "")) + MESSAGE_OVERHEAD_TOKENS for m in messages)

    def _tokenizer(self) -> Any:
        if self._vocab is None and self.model_path is not None and llama_cpp_installed():
            llama_cpp = import_llama_cpp()
            with self._lock:
                if self._vocab is None:
                    # vocab_only loads the tokenizer without the weights: milliseconds.
                    self._vocab = close_at_exit(
                        llama_cpp.Llama(str(self.model_path), vocab_only=True, verbose=False)
                    )
        return self._vocab


@cache
def default_token_counter() -> TokenCounter:
    return TokenCounter(bundled_model_path())
