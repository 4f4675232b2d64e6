"""Evaluation: retrieval metrics, the out-of-scope trade-off, tuning, ground truth, RAG judging.

Everything here is a plain function over a Retriever or an Assistant, so the CLI and the
notebooks share one implementation.
"""

from __future__ import annotations

import csv
import io
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from assistant import prompts
from assistant.judge import LABELS, Judge, heuristic_verdict, sources_text
from assistant.knowledge import Document
from assistant.llm import Provider, ProviderError
from assistant.rag import Assistant
from assistant.retrieval import RetrievalSettings, Retriever

QUERY_COLUMNS = ("instruction", "question", "query")


@dataclass(frozen=True)
class Query:
    text: str
    intent: str | None = None
    doc_id: str | None = None


def _csv_rows(path: Path) -> csv.DictReader:
    """A DictReader over a UTF-8 CSV; raises ValueError naming the file when it is not."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    return csv.DictReader(io.StringIO(text, newline=""))


def read_queries(path: Path) -> list[Query]:
    """A CSV whose query column is `instruction`, `question` or `query`; optional `intent`
    and `id` (a KB document id, as in the original project's ground truth). A `.txt` file is
    one query a line (`#` lines are comments). Raises ValueError naming the file."""
    if path.suffix.lower() == ".txt":
        from assistant.knowledge import read_lines

        try:
            return [Query(line) for line in read_lines(path)]
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text; save it as UTF-8") from exc
    reader = _csv_rows(path)
    column = next((c for c in QUERY_COLUMNS if c in (reader.fieldnames or [])), None)
    if column is None:
        raise ValueError(f"{path}: needs a column named one of {', '.join(QUERY_COLUMNS)}")
    return [
        Query(row[column].strip(), row.get("intent") or None, row.get("id") or None)
        for row in reader
        if (row.get(column) or "").strip()
    ]


def split_documents(
    docs: Sequence[Document], test_size: float, seed: int = 0
) -> tuple[list[Document], list[Document]]:
    """Stratified by intent: every intent keeps documents on both sides."""
    rng = random.Random(seed)
    by_intent: dict[str, list[Document]] = {}
    for doc in docs:
        by_intent.setdefault(doc.intent, []).append(doc)
    kb, held_out = [], []
    for intent in sorted(by_intent):
        group = by_intent[intent][:]
        rng.shuffle(group)
        cut = max(1, round(len(group) * test_size)) if len(group) > 1 else 0
        held_out += group[:cut]
        kb += group[cut:]
    return kb, held_out


def _rank_of(items: Sequence[object], wanted: object) -> int | None:
    return next((rank for rank, item in enumerate(items, 1) if item == wanted), None)


def retrieval_metrics(
    retriever: Retriever,
    queries: Sequence[Query],
    k: int = 5,
    progress: bool = False,
    searched: Callable[[str], str] | None = None,
) -> dict[str, float | int]:
    """Intent-level hit rate and MRR (a same-intent document counts), intent@1, and, when the
    queries name a document id, `id_at_1` and the exact-id hit rate and MRR (the original
    project's yardstick). MRR as in Voorhees (1999), TREC-8 QA: mean of 1/rank, 0 past k.
    `searched` gives the text each query is searched as (`decisions.Decisions.searched`:
    spelling corrected and without the company's name, as the service searches it); None: as
    written. Latency (ms per query) covers the search only."""
    intent_of = {doc.id: doc.intent for doc in retriever.documents}
    labelled = any(doc.intent for doc in retriever.documents)
    latencies, intent_hits, intent_ranks, id_ranks, top1 = [], [], [], [], []
    for query in tqdm(queries, desc="retrieval", disable=not progress, unit="q"):
        text = searched(query.text) if searched else query.text
        started = time.perf_counter()
        result = retriever.search(text, k)
        latencies.append((time.perf_counter() - started) * 1000)
        expected = query.intent or intent_of.get(query.doc_id or "")
        if expected and labelled:
            hit_intents = [hit.document.intent for hit in result.hits]
            intent_ranks.append(_rank_of(hit_intents, expected))
            intent_hits.append(expected in hit_intents)
            top1.append(result.intent == expected)
        if query.doc_id:
            id_ranks.append(_rank_of([hit.document.id for hit in result.hits], query.doc_id))
    metrics: dict[str, float | int] = {"queries": len(queries), "k": k}
    if intent_ranks:
        metrics["intent_at_1"] = float(np.mean(top1))
        metrics["hit_rate"] = float(np.mean(intent_hits))
        metrics["mrr"] = float(np.mean([1 / r if r else 0.0 for r in intent_ranks]))
    if id_ranks:
        metrics["id_at_1"] = float(np.mean([r == 1 for r in id_ranks]))
        metrics["id_hit_rate"] = float(np.mean([r is not None for r in id_ranks]))
        metrics["id_mrr"] = float(np.mean([1 / r if r else 0.0 for r in id_ranks]))
    if latencies:
        metrics["latency_ms_p50"] = float(np.percentile(latencies, 50))
        metrics["latency_ms_p99"] = float(np.percentile(latencies, 99))
    return metrics


def per_intent_accuracy(
    retriever: Retriever,
    queries: Sequence[Query],
    searched: Callable[[str], str] | None = None,
) -> dict[str, float]:
    """Intent@1 of the queries of each intent, by intent; `searched` as in
    `retrieval_metrics`."""
    correct: dict[str, list[bool]] = {}
    for query in queries:
        if query.intent:
            text = searched(query.text) if searched else query.text
            correct.setdefault(query.intent, []).append(
                retriever.search(text, 1).intent == query.intent
            )
    return {intent: float(np.mean(v)) for intent, v in sorted(correct.items())}


DECLINED = "out_of_scope"


def scope_metrics(
    assistant: Assistant,
    in_scope: Sequence[str],
    out_of_scope: Sequence[str],
    progress: bool = False,
) -> dict[str, float | int]:
    """How often real questions get through, and how often off-topic ones are declined."""

    def statuses(texts: Sequence[str], label: str) -> list[str]:
        return [
            assistant.answer(t).status
            for t in tqdm(texts, desc=label, disable=not progress, unit="q")
        ]

    inside, outside = statuses(in_scope, "in scope"), statuses(out_of_scope, "out of scope")

    def share(values: list[str], status: str) -> float:
        return float(np.mean([v == status for v in values])) if values else 0.0

    return {
        "in_scope_queries": len(inside),
        "out_of_scope_queries": len(outside),
        "in_scope_answered": share(inside, "answered"),
        "in_scope_handoff": share(inside, "handoff"),
        "in_scope_declined": share(inside, DECLINED),
        "out_of_scope_declined": share(outside, DECLINED),
    }


@dataclass(frozen=True)
class Expectation:
    """One test question and the outcome it should get: a KB entry id or intent, `handoff`
    or `decline`, or several such separated by `|` (`refund-request|double-charge`), any of
    which is right; two entries joined by `&` (`cancel-subscription&watchlist`) must both be
    answered, as a message asking two questions is. `language` is its ISO code and `kind`
    what it tests (typo, foreign, ...)."""

    question: str
    expected: str
    kind: str = ""
    language: str = "en"

    @property
    def outcomes(self) -> list[str]:
        """The acceptable outcomes, `expected` split at `|`."""
        return [outcome.strip() for outcome in self.expected.split("|") if outcome.strip()]


def read_expectations(path: Path, column: str) -> list[Expectation]:
    """Rows of a CSV with `question` and the `column` of expected outcomes; rows whose
    expectation is empty (the topic is not in that KB) are left out."""
    reader = _csv_rows(path)
    if column not in (reader.fieldnames or []) or "question" not in (reader.fieldnames or []):
        raise ValueError(
            f"{path}: needs a question column and a {column!r} column of expected "
            "outcomes (name another with --expect)"
        )
    return [
        Expectation(
            row["question"].strip(),
            row[column].strip(),
            (row.get("kind") or "").strip(),
            (row.get("language") or "en").strip() or "en",
        )
        for row in reader
        if (row.get(column) or "").strip() and (row.get("question") or "").strip()
    ]


def outcome_of(answer, expectation: Expectation, kb_language: str = "en") -> bool:
    """Whether an Answer is one of the expected outcomes. A question in another language
    may also be handed off for its language (the assistant says which language it answers
    in) when an entry is expected."""
    foreign = expectation.language != kb_language
    return any(_is_outcome(answer, expected, foreign) for expected in expectation.outcomes)


def _is_outcome(answer, expected: str, foreign: bool) -> bool:
    if expected == "decline":
        return answer.status == DECLINED
    if expected == "handoff":
        return answer.status == "handoff"
    if foreign and answer.handoff_reason == "language":
        return True
    if answer.status != "answered":
        return False
    if "&" in expected:
        # Both questions of a message answered: the entries the reply is made of (its cited
        # sources, decisions.Decisions._two_topics), not the runner-up of a reply that
        # answers one; an answer citing nothing is read by its two first sources.
        replied = answer.cited_sources or [source.id for source in answer.sources[:2]]
        both = set(replied) | {s.intent for s in answer.sources if s.id in replied}
        return all(part.strip() in both for part in expected.split("&"))
    top = answer.sources[0].id if answer.sources else None
    return expected in {answer.intent, top}


def _got(answer) -> str:
    """What a miss line says the question got: the entry, or the status with why (a handoff's
    reason, the entry a declined question came nearest to)."""
    if answer.status == "answered":
        return str(answer.intent)
    if answer.status == "handoff" and answer.handoff_reason:
        return f"handoff ({answer.handoff_reason})"
    if answer.status == DECLINED and answer.intent:
        return f"{answer.status} (nearest {answer.intent})"
    return answer.status


def outcome_metrics(
    assistant: Assistant, expectations: Sequence[Expectation], progress: bool = False
) -> dict[str, object]:
    """Share of right outcomes overall and per kind; how many messages that should be handed
    off were declined instead, and how many of those asked for a person (kind `human`, or no
    kind given)."""
    right: dict[str, list[bool]] = {}
    misses, declined_handoffs, declined_humans = [], 0, 0
    for item in tqdm(expectations, desc="outcomes", disable=not progress, unit="q"):
        answer = assistant.answer(item.question)
        ok = outcome_of(answer, item, assistant.language)
        right.setdefault(item.kind or "all", []).append(ok)
        if "handoff" in item.outcomes and answer.status == DECLINED and not ok:
            declined_handoffs += 1
            declined_humans += item.kind in {"human", ""}
        if not ok:
            misses.append(f"{item.question} -> {_got(answer)} (expected {item.expected})")
    flat = [ok for oks in right.values() for ok in oks]
    return {
        "questions": len(flat),
        "right_outcome": float(np.mean(flat)) if flat else 0.0,
        "handoff_expected_but_declined": declined_handoffs,
        "asked_for_a_person_but_declined": declined_humans,
        **{f"right_{kind}": float(np.mean(oks)) for kind, oks in sorted(right.items())},
        "misses": misses,
    }


def tune(
    docs: Sequence[Document],
    queries: Sequence[Query],
    background: Sequence[str],
    base: RetrievalSettings,
    trials: int = 30,
    out_of_scope: Sequence[str] = (),
    answered_target: float = 0.995,
    handoff_rate: float = 0.003,
    seed: int = 0,
    progress: bool = True,
) -> tuple[RetrievalSettings, dict[str, float]]:
    """Random search over boosts and the confidence temperature on validation `queries`,
    scored by MRR then intent@1. Then the thresholds: at most `handoff_rate` of real questions
    handed off for low confidence and, given off-topic questions, the scope margin that declines
    the most of them while `answered_target` of real ones get through."""
    rng = random.Random(seed)
    candidates = [base] + [
        replace(
            base,
            boosts={
                "question": rng.choice([1.0, 2.0, 3.0, 4.0]),
                "intent_text": rng.choice([0.0, 0.5, 1.0, 1.5, 2.0]),
                "response": rng.choice([0.0, 0.25, 0.5, 1.0]),
            },
            temperature=rng.choice([1.0, 2.0, 4.0, 6.0, 8.0]),
        )
        for _ in range(trials - 1)
    ]
    best, best_key, found = base, (-1.0, -1.0), {}
    trials_bar = tqdm(candidates, desc="trials", disable=not progress, unit="trial")
    for candidate in trials_bar:
        metrics = retrieval_metrics(Retriever(docs, candidate, background), queries, k=5)
        key = (metrics.get("mrr", 0.0), metrics.get("intent_at_1", 0.0))
        if key > best_key:
            best, best_key, found = candidate, key, metrics
            trials_bar.set_postfix(best_mrr=f"{key[0]:.3f}", best_intent_at_1=f"{key[1]:.3f}")
    texts = [q.text for q in queries]
    chosen = Retriever(docs, best, background)
    confidences = [
        chosen.search(t, 1).confidence
        for t in tqdm(texts, desc="handoff threshold", disable=not progress, unit="q")
    ]
    best = replace(best, handoff_threshold=round(float(np.quantile(confidences, handoff_rate)), 4))
    if out_of_scope:
        best, scope = _tune_scope(
            docs, texts, out_of_scope, background, best, answered_target, progress
        )
        found.update(scope)
    return best, {
        **found,
        "handoff_threshold": best.handoff_threshold,
        "scope_margin": best.scope_margin,
    }


def _tune_scope(docs, texts, out_of_scope, background, settings, answered_target, progress):
    chosen, report = settings, {}
    for margin in tqdm([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7], desc="scope", disable=not progress):
        retriever = Retriever(docs, replace(settings, scope_margin=margin), background)
        answered = float(np.mean([retriever.search(t, 1).in_scope for t in texts]))
        declined = float(np.mean([not retriever.search(t, 1).in_scope for t in out_of_scope]))
        if answered >= answered_target and declined >= report.get("out_of_scope_declined", -1):
            chosen = replace(settings, scope_margin=margin)
            report = {"in_scope_answered": answered, "out_of_scope_declined": declined}
    return chosen, report


def question_writer(provider: Provider) -> Callable[[Document, int], list[str]]:
    """Asks the provider for `count` customer questions that a document answers."""

    def ask(doc: Document, count: int) -> list[str]:
        prompt = prompts.GROUND_TRUTH.format(
            intent=doc.intent, question=doc.question, response=doc.response, count=count
        )
        text = provider.complete([{"role": "user", "content": prompt}]).text
        lines = (
            re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", line).strip(' "')
            for line in text.splitlines()
        )
        return [line for line in lines if len(line.split()) >= 3]

    return ask


def generate_ground_truth(
    docs: Sequence[Document],
    ask: Callable[[Document, int], list[str]],
    per_doc: int,
    out: Path,
    progress: bool = True,
) -> int:
    """Write `question,category,id` rows, `per_doc` LLM-written questions per document."""
    written = 0
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "category", "id"])
        for doc in tqdm(docs, desc="ground truth", disable=not progress, unit="doc"):
            for question in ask(doc, per_doc)[:per_doc]:
                writer.writerow([question, doc.category, doc.id])
                written += 1
    return written


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


_FILLERS = ("hey, ", "hi, ", "please ", "quick question: ", "", "", "")
_ENDINGS = (" thanks", " please", "?", " asap", "", "", "")


def vary(text: str, rng: random.Random) -> str:
    """A new phrasing of `text`: a filler, a dropped or swapped letter, an ending."""
    words = text.split()
    if len(words) > 3 and rng.random() < 0.5:
        i = rng.randrange(len(words))
        word = words[i]
        if len(word) > 3:
            j = rng.randrange(len(word) - 1)
            words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    return f"{rng.choice(_FILLERS)}{' '.join(words)}{rng.choice(_ENDINGS)}"


def synthetic_kb(docs: Sequence[Document], size: int, seed: int = 0) -> list[Document]:
    """`size` documents made by repeating `docs` with varied questions and fresh ids."""
    rng = random.Random(seed)
    out = []
    for n in range(size):
        doc = docs[n % len(docs)]
        question = vary(doc.question, rng)
        out.append(replace(doc, id=f"syn{n:06d}", question=question))
    return out


def bench_retrieval(
    settings,
    docs: Sequence[Document],
    size: int,
    queries: int = 500,
    seed: int = 0,
    unlabelled: bool = False,
    progress: bool = False,
) -> dict[str, float | int | str]:
    """Build a `size`-document index as the service does (embeddings included), restart on
    it, and time queries. `build_s`: first build, embeddings and calibration included;
    `restart_s`: from the cached index to the first answer (encoder, handoff signals and
    one question); `p50_ms`/`p99_ms`: per search, the query's embedding included.
    `unlabelled` drops the intent labels, so the hybrid ranking serves every query."""
    import tempfile

    from assistant.knowledge import Profile
    from assistant.llm import ExtractiveProvider
    from assistant.rag import build_retriever, build_signals

    kb = synthetic_kb(docs, size, seed)
    if unlabelled:
        kb = [replace(doc, intent="") for doc in kb]
    rng = random.Random(seed + 1)
    texts = [vary(rng.choice(docs).question, rng) for _ in range(queries)]
    with tempfile.TemporaryDirectory() as tmp:
        local = replace(settings, data_dir=Path(tmp))
        retriever, build_s = timed(lambda: build_retriever(local, kb))

        def restart() -> object:
            again = build_retriever(local, kb)
            signals = build_signals(local, again)
            return Assistant(again, ExtractiveProvider(), Profile(), signals=signals).answer(
                texts[0]
            )

        _, restart_s = timed(restart)
    latencies = []
    for text in tqdm(texts, desc="queries", disable=not progress, unit="q"):
        started = time.perf_counter()
        retriever.search(text, 5)
        latencies.append((time.perf_counter() - started) * 1000)
    return {
        "docs": len(kb),
        "ranking": "intent model" if retriever.labelled else "hybrid",
        "encoder": retriever.encoder.name if retriever.encoder else "none",
        "build_s": round(build_s, 3),
        "restart_s": round(restart_s, 3),
        "p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "p99_ms": round(float(np.percentile(latencies, 99)), 3),
        "queries": queries,
    }


def plot_per_intent(accuracy: dict[str, float], path: Path) -> None:
    """A horizontal bar per intent: which intents the retriever gets wrong."""
    from matplotlib.figure import Figure

    intents = sorted(accuracy, key=accuracy.get)
    figure = Figure(figsize=(7, 0.28 * len(intents) + 1.2), layout="constrained")
    axes = figure.subplots()
    bars = axes.barh(intents, [accuracy[i] for i in intents], color="#3b7dd8")
    axes.bar_label(bars, labels=[f"{accuracy[i]:.0%}" for i in intents], fontsize=7, padding=2)
    axes.set_xlim(min(0.8, min(accuracy.values()) - 0.05), 1.04)
    axes.set_xlabel("intent@1 on held-out questions")
    axes.tick_params(axis="y", labelsize=8)
    figure.savefig(path, dpi=120)


def plot_scope_curve(
    in_scores: Sequence[float], out_scores: Sequence[float], threshold: float, path: Path
) -> None:
    """Real questions let through and off-topic ones declined, along the gate's threshold."""
    from matplotlib.figure import Figure

    inside, outside = np.asarray(in_scores), np.asarray(out_scores)
    grid = np.linspace(min(inside.min(), outside.min()), max(inside.max(), outside.max()), 200)
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    axes.plot(grid, [np.mean(inside >= t) for t in grid], label="in-scope answered")
    axes.plot(grid, [np.mean(outside < t) for t in grid], label="out-of-scope declined")
    axes.axvline(threshold, color="grey", linestyle="--", label=f"threshold {threshold:.2f}")
    axes.set_xlabel("scope score threshold")
    axes.set_ylabel("share of questions")
    axes.legend(loc="lower left")
    figure.savefig(path, dpi=120)


def kb_statistics(docs: Sequence[Document]):
    """Documents, distinct answers and question length per category and intent."""
    import pandas as pd

    frame = pd.DataFrame([d.to_dict() for d in docs])
    frame["question_words"] = frame["question"].str.split().str.len()
    return (
        frame.groupby(["category", "intent"])
        .agg(
            documents=("id", "size"),
            answers=("response", "nunique"),
            question_words=("question_words", "mean"),
        )
        .round(1)
        .reset_index()
    )


def plot_kb(docs: Sequence[Document], path: Path | None = None):
    """Documents per intent, coloured by category."""
    from matplotlib.figure import Figure

    stats = kb_statistics(docs).sort_values(["category", "documents"])
    categories = sorted(stats["category"].unique())
    palette = dict(zip(categories, [f"C{i}" for i in range(len(categories))], strict=True))
    figure = Figure(figsize=(7, 0.25 * len(stats) + 1.5), layout="constrained")
    axes = figure.subplots()
    axes.barh(stats["intent"], stats["documents"], color=[palette[c] for c in stats["category"]])
    for category, colour in palette.items():
        axes.barh([], [], color=colour, label=category)
    axes.legend(fontsize=7, loc="lower right")
    axes.set_xlabel("documents")
    axes.tick_params(axis="y", labelsize=8)
    if path:
        figure.savefig(path, dpi=120)
    return figure


def sample_data(settings) -> Path:
    """The shared real dev data when this checkout sits beside it, else the bundled demo KB."""
    from assistant.config import PROJECT_ROOT

    shared = PROJECT_ROOT.parent / "shared" / "data" / "bitext-media-dev.csv"
    return shared if shared.is_file() else settings.demo_kb


def evaluate_rag(
    assistant: Assistant, judge: Judge, queries: Sequence[Query], out: Path, progress: bool = True
) -> dict[str, object]:
    """Answer each query, judge the answer, and write `rag-eval.csv` (the original project's
    columns plus intent, status and model), `summary.json` and `relevance.png` into `out`."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for query in tqdm(queries, desc="rag eval", disable=not progress, unit="q"):
        answer = assistant.answer(query.text)
        try:
            verdict = judge.evaluate(
                query.text,
                answer.answer,
                sources_text(answer.sources),
                answer.status,
                answer.confidence,
            )
        except ProviderError as exc:
            # One judge timeout must not lose a long run: this answer gets the labelled heuristic.
            verdict = heuristic_verdict(
                answer.status, answer.confidence, f"judge failed ({type(exc).__name__})"
            )
        rows.append(
            {
                "answer": answer.answer,
                "id": query.doc_id or "",
                "question": query.text,
                "relevance": verdict.relevance,
                "explanation": verdict.explanation,
                "intent": answer.intent or "",
                "expected_intent": query.intent or "",
                "status": answer.status,
                "model_used": answer.model_used,
                "judge_model": verdict.model,
                "judge_source": verdict.source,
            }
        )
    with (out / "rag-eval.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["answer"])
        writer.writeheader()
        writer.writerows(rows)
    counts = {label: sum(r["relevance"] == label for r in rows) for label in LABELS}
    summary = {
        "answers": len(rows),
        **{label.lower(): counts[label] / max(len(rows), 1) for label in LABELS},
        "judge": sorted({r["judge_model"] for r in rows}),
        "statuses": {
            s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    plot_relevance(counts, out / "relevance.png")
    return summary


def plot_relevance(counts: dict[str, int], path: Path) -> None:
    from matplotlib.figure import Figure

    total = max(sum(counts.values()), 1)
    figure = Figure(figsize=(6, 3), layout="constrained")
    axes = figure.subplots()
    bars = axes.bar(
        list(counts), [c / total for c in counts.values()], color=["#2e9e5b", "#e0a526", "#d1495b"]
    )
    axes.bar_label(bars, labels=[f"{c / total:.0%} ({c})" for c in counts.values()])
    axes.set_ylim(0, 1.1)
    axes.set_ylabel("share of judged answers")
    figure.savefig(path, dpi=120)
