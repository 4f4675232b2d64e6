"""`assistant bench llm`: answer latency and generation speed of a provider on real prompts,
and its answers beside the extractive ones, for a person to rate.

Each run is one answer prompt exactly as the assistant builds it (the retrieved entries of a
knowledge-base question), timed around the provider's `complete`. The first answer is a
warm-up and is not counted: it loads the model.
"""

from __future__ import annotations

import csv
import math
import os
import random
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm import tqdm

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


RATINGS = ("good", "partly", "bad")
RATED_COLUMNS = ("rating_model", "rating_extractive")


def rating_questions(path: Path, seed: int = 0) -> list[str]:
    """The customer questions of `path` (data/customer-questions.csv) that the demo KB
    answers with an entry (English, not a request for a person, not off-topic), in a seeded
    order, so a rerun rates the same ones."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [
            row["question"]
            for row in csv.DictReader(handle)
            if row.get("language", "en") == "en"
            and row.get("demo") not in ("", "handoff", "decline")
        ]
    random.Random(seed).shuffle(rows)
    return rows


def write_answers(
    model: Assistant, extractive: Assistant, questions: Sequence[str], path: Path, count: int
) -> int:
    """A CSV of the first `count` of `questions` that get an answer (not a decline or a
    handoff), answered by `model` and by `extractive` side by side, with empty
    `rating_model` and `rating_extractive` columns for a person to fill with good, partly or
    bad. Returns the number of rows."""
    written = 0
    with (
        path.open("w", encoding="utf-8", newline="") as handle,
        tqdm(total=count, desc="answering", unit="q") as progress,
    ):
        writer = csv.writer(handle)
        writer.writerow(
            ["question", "model_answer", "model_fallback", "extractive_answer", *RATED_COLUMNS]
        )
        for question in questions:
            entry = extractive.answer(question)
            if entry.status != "answered":
                continue
            generated = model.answer(question)
            writer.writerow([question, generated.answer, generated.fallback, entry.answer, "", ""])
            written += 1
            progress.update()
            if written == count:
                break
    return written


def count_ratings(path: Path) -> dict[str, dict[str, int]]:
    """{column: {good, partly, bad, unrated}} of a file `write_answers` made and a person
    rated; raises ValueError for a rating that is none of good, partly or bad."""
    counts = {column: Counter() for column in RATED_COLUMNS}
    with path.open(encoding="utf-8", newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            for column in RATED_COLUMNS:
                rating = (row.get(column) or "").strip().lower() or "unrated"
                if rating not in (*RATINGS, "unrated"):
                    raise ValueError(f"{path}:{line}: {column} {rating!r} is not good/partly/bad")
                counts[column][rating] += 1
    return {
        column: {name: counts[column][name] for name in (*RATINGS, "unrated")}
        for column in RATED_COLUMNS
    }
