"""`assistant bench llm`: answer latency and generation speed of a provider on real prompts.

Each run is one answer prompt exactly as the assistant builds it (the retrieved entries of a
knowledge-base question), timed around the provider's `complete`. The first answer is a
warm-up and is not counted: it loads the model.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from assistant.config import Settings
from assistant.llm import Provider
from assistant.rag import Assistant, build_messages


@dataclass(frozen=True)
class BenchResult:
    provider: str
    model: str
    runs: int
    max_tokens: int
    context_entries: int
    cpus: int
    p50_s: float
    p95_s: float
    tokens_per_s: float
    mean_prompt_tokens: float
    mean_completion_tokens: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `fraction` of them at or
    below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def bench_questions(assistant: Assistant) -> list[str]:
    """The first customer phrasing of every intent in the knowledge base."""
    first: dict[str, str] = {}
    for document in assistant.retriever.documents:
        first.setdefault(document.intent, document.question)
    return list(first.values())


def bench_settings(settings: Settings, provider: str, max_tokens: int) -> Settings:
    return replace(
        settings, llm_provider=provider, llm_max_tokens=max_tokens, local_max_tokens=max_tokens
    )


def bench_llm(
    assistant: Assistant, questions: Sequence[str], runs: int, max_tokens: int
) -> BenchResult:
    """Time `runs` answers from `assistant.provider`, cycling through `questions`."""
    provider: Provider = assistant.provider
    entries = provider.context_entries or assistant.k
    prompts = []
    for question in questions:
        hits = assistant.retriever.search(question, assistant.k).hits[:entries]
        if hits:
            prompts.append(build_messages(question, hits, assistant.profile.company_name))
    if not prompts:
        raise ValueError("no benchmark question retrieved any knowledge-base entry")
    provider.complete(prompts[0])
    completions = [provider.complete(prompts[i % len(prompts)]) for i in range(runs)]
    latencies = [c.latency for c in completions]
    return BenchResult(
        provider=provider.name,
        model=provider.model,
        runs=runs,
        max_tokens=max_tokens,
        context_entries=entries,
        cpus=os.cpu_count() or 1,
        p50_s=round(statistics.median(latencies), 3),
        p95_s=round(percentile(latencies, 0.95), 3),
        tokens_per_s=round(sum(c.completion_tokens for c in completions) / sum(latencies), 1),
        mean_prompt_tokens=round(statistics.mean(c.prompt_tokens for c in completions), 1),
        mean_completion_tokens=round(statistics.mean(c.completion_tokens for c in completions), 1),
    )
