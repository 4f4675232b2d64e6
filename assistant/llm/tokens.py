"""Token estimates for a server that reports no usage."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from assistant.llm.base import MESSAGE_OVERHEAD_TOKENS, Message
from assistant.llm.llamacpp import (
    bundled_model_path,
    close_at_exit,
    import_llama_cpp,
    llama_cpp_installed,
)


class TokenCounter:
    """Counts tokens for a server that reports no usage: with the bundled model's tokenizer
    when the `[local]` extra is installed (tiktoken cannot fetch its files offline), else at
    about four characters a token. Either way the caller flags the counts as estimates."""

    def __init__(self, model_path: Path | None):
        self.model_path = model_path
        self._vocab: Any = None
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        """Tokens in `text`, without a beginning-of-sequence token."""
        if not text:
            return 0
        vocab = self._tokenizer()
        if vocab is None:
            return -(-len(text) // 4)
        with self._lock:
            return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def count_messages(self, messages: Sequence[Message]) -> int:
        """Tokens in the messages' contents, plus the chat template's few per message."""
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
    """The process's one counter, with the bundled model's tokenizer when there is one."""
    return TokenCounter(bundled_model_path())
