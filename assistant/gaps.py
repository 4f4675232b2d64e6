"""What the knowledge base is missing: the questions it failed, grouped by topic.

A question counts as a gap when it was declined (`out_of_scope`), handed off because retrieval
was unsure (`low_confidence`), or voted down. Paraphrases of one missing topic ("can I watch
offline?", "how do I download episodes for the plane?") are grouped by the cosine similarity of
their embeddings, with the retrieval's own encoder (WordLlama by default): average-linkage
agglomerative clustering, cut where groups are less similar than `similarity`. `assistant gaps`
prints the groups, most frequent first; the Grafana dashboard and the Streamlit monitoring page
show the declined questions by count.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import AgglomerativeClustering

from assistant.retrieval.encoders import Encoder

# Mean cosine similarity (WordLlama) above which questions are one topic: paraphrases of one
# topic measured 0.3-0.85 with each other, questions of different topics below 0.25.
SIMILARITY = 0.3
REASONS = ("declined", "low_confidence", "voted_down")


@dataclass
class Gap:
    """One missing topic: `count` failed questions, `reasons` counted by REASONS, `question`
    its most asked wording, `examples` its most asked distinct wordings (at most the number
    asked for, `question` first), when it was last asked, and `nearest`: the entry (or
    intent) retrieval most often ranked first for them, '' when none. Where that entry is the
    right one, the group's wordings belong among its alternate questions; else the KB lacks
    the topic."""

    question: str
    count: int
    reasons: dict[str, int]
    examples: list[str] = field(default_factory=list)
    last_seen: datetime | None = None
    nearest: str = ""


def _normalized(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def _labels(questions: Sequence[str], encoder: Encoder | None, similarity: float) -> np.ndarray:
    """A group number per question: by embedding, or by normalised wording without an encoder
    (EMBEDDING_PROVIDER=none)."""
    wordings = [_normalized(q) for q in questions]
    distinct = list(dict.fromkeys(wordings))
    if encoder is None or len(distinct) < 2:
        return np.array([distinct.index(w) for w in wordings])
    vectors = encoder.embed(distinct)
    clustering = AgglomerativeClustering(
        n_clusters=None,
        metric="cosine",
        linkage="average",
        distance_threshold=1.0 - similarity,
    ).fit(vectors)
    by_wording = dict(zip(distinct, clustering.labels_, strict=True))
    return np.array([by_wording[w] for w in wordings])


def find_gaps(
    rows: Sequence[Mapping[str, Any]],
    encoder: Encoder | None,
    *,
    similarity: float = SIMILARITY,
    examples: int = 3,
) -> list[Gap]:
    """Group failed questions, most frequent group first (ties: the latest asked first).

    `rows`: dicts with `question`, `reason` (one of REASONS) and `timestamp`, as
    Database.gap_questions returns them. `similarity`: the mean cosine similarity (0-1) a
    group's questions keep with each other; higher makes more, tighter groups."""
    if not rows:
        return []
    questions = [row["question"] for row in rows]
    labels = _labels(questions, encoder, similarity)
    gaps = []
    for label in np.unique(labels):
        members = [row for row, own in zip(rows, labels, strict=True) if own == label]
        wordings = Counter(row["question"].strip() for row in members)
        # The most asked wording stands for the group: what customers actually type.
        common = [text for text, _ in wordings.most_common(examples)]
        reasons = Counter(row["reason"] for row in members)
        nearest = Counter(row.get("nearest") or "" for row in members)
        nearest.pop("", None)
        gaps.append(
            Gap(
                question=common[0],
                count=len(members),
                reasons={reason: reasons.get(reason, 0) for reason in REASONS},
                examples=common,
                last_seen=max(row["timestamp"] for row in members),
                nearest=nearest.most_common(1)[0][0] if nearest else "",
            )
        )
    gaps.sort(key=lambda gap: (-gap.count, -(gap.last_seen.timestamp() if gap.last_seen else 0)))
    return gaps


def write_csv(gaps: Sequence[Gap], path: Path) -> None:
    """One row per group: rank, count, the count per reason, question, examples (joined with
    ` | `, as an `alternates` cell takes them), last_seen (ISO 8601) and nearest."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "count", *REASONS, "question", "examples", "last_seen", "nearest"])
        for rank, gap in enumerate(gaps, start=1):
            writer.writerow(
                [
                    rank,
                    gap.count,
                    *(gap.reasons[reason] for reason in REASONS),
                    gap.question,
                    " | ".join(gap.examples),
                    gap.last_seen.isoformat() if gap.last_seen else "",
                    gap.nearest,
                ]
            )
