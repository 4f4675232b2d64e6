"""`assistant bench`: the model, retrieval and the served API, measured (figures printed,
never asserted)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from assistant.commands.common import (
    DOCS_OPTION,
    kb_documents,
    load_settings,
    loading_kb,
    print_metrics,
)
from assistant.config import PROJECT_ROOT


@click.group("bench")
def bench_group() -> None:
    """Benchmarks."""


@bench_group.command("llm")
@click.option(
    "--provider",
    type=click.Choice(["local", "ollama", "openai", "auto"]),
    default="local",
    show_default=True,
)
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print p50_s, p95_s, tokens_per_s, model.")
@click.option(
    "--answers",
    "answers_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Instead: write the model's and the extractive answers to 25 customer questions, "
    "side by side, to this CSV for a person to rate (good, partly, bad).",
)
@click.option(
    "--ratings",
    "ratings_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Instead: count the ratings in a file --answers wrote.",
)
def bench_llm_command(
    provider: str,
    runs: int,
    max_tokens: int,
    as_json: bool,
    answers_path: Path | None,
    ratings_path: Path | None,
) -> None:
    """Answer latency (p50, p95) and tokens per second of a model on real answer prompts."""
    from assistant.bench import bench_llm, bench_questions, bench_settings, count_ratings
    from assistant.rag import build_assistant

    if ratings_path is not None:
        try:
            counts = count_ratings(ratings_path)
        except (ValueError, KeyError) as exc:
            raise click.ClickException(str(exc)) from exc
        if as_json:
            click.echo(json.dumps(counts))
            return
        for column, found in counts.items():
            click.echo(f"{column.removeprefix('rating_'):<11} " + "  ".join(
                f"{name} {n}" for name, n in found.items()
            ))  # fmt: skip
        return
    if answers_path is not None:
        # Answers as customers get them: the configured lengths, not the benchmark's.
        _write_rating_file(replace(load_settings(), llm_provider=provider), answers_path)
        return
    settings = bench_settings(load_settings(), provider, max_tokens)
    try:
        with loading_kb():
            assistant = build_assistant(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if assistant.provider.name == "extractive":
        raise click.ClickException("no model to benchmark: the provider resolved to extractive")
    result = bench_llm(assistant, bench_questions(assistant), runs, max_tokens)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    click.echo(
        f"{result.provider}:{result.model} on {result.cpus} CPUs, {result.runs} answers of up to "
        f"{result.max_tokens} tokens from {result.context_entries} KB "
        f"entr{'y' if result.context_entries == 1 else 'ies'} "
        f"(~{result.mean_prompt_tokens:.0f} prompt tokens)"
    )
    click.echo(
        f"p50 {result.p50_s:.2f} s  p95 {result.p95_s:.2f} s  {result.tokens_per_s:.1f} tokens/s"
    )


def _write_rating_file(settings, path: Path) -> None:
    from assistant.bench import rating_questions, write_answers
    from assistant.rag import build_assistant

    try:
        model = build_assistant(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    extractive = build_assistant(replace(settings, llm_provider="extractive"))
    questions = rating_questions(PROJECT_ROOT / "data" / "customer-questions.csv")
    written = write_answers(model, extractive, questions, path, count=25)
    click.echo(
        f"{written} questions answered by {model.provider.name}:{model.provider.model} and "
        f"extractively in {path}; rate each answer good, partly or bad, then run "
        f"`assistant bench llm --ratings {path}`"
    )


@bench_group.command("retrieval")
@DOCS_OPTION
@click.option("--kb", default=None, help="Rows to repeat (default: ../shared dev data, else demo).")
@click.option("--queries", type=click.IntRange(min=10), default=1000, show_default=True)
@click.option("--unlabelled", is_flag=True, help="Drop the intent labels: time the hybrid ranking.")
@click.option("--json", "as_json", is_flag=True, help="Print build_s, restart_s, p50_ms, p99_ms.")
def bench_retrieval_command(
    size: int, kb: str | None, queries: int, unlabelled: bool, as_json: bool
) -> None:
    """Index build (embeddings included), restart to the first answer, and per-query latency
    (the query's embedding included) on a KB of `--docs` documents."""
    from assistant.evaluation import bench_retrieval, sample_data

    settings = load_settings()
    source = kb or str(sample_data(settings))
    docs = kb_documents(settings, source)
    result = bench_retrieval(
        settings, docs, size, queries, unlabelled=unlabelled, progress=not as_json
    )
    print_metrics({"rows_from": source, **result}, as_json)


@bench_group.command("api")
@click.option("--seconds", type=click.FloatRange(min=1), default=60, show_default=True)
# Six clients: on 2 cores with 3 workers, more add a little throughput and much more p99.
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=6,
    show_default=True,
    help="Keep-alive clients asking one question after another.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="gunicorn workers (default: WEB_CONCURRENCY).",
)
@DOCS_OPTION
@click.option(
    "--outage",
    type=click.FloatRange(min=0),
    default=0,
    help="Stop the database for this many seconds a third of the way in; report the spool's "
    "drain and /health p99.",
)
@click.option(
    "--port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    help="Serve on this port (default: a free one), e.g. to watch it or open it in a firewall.",
)
@click.option(
    "--llm-latency",
    type=click.FloatRange(min=0),
    default=0,
    help="Answer from a stand-in OpenAI-compatible model that takes this many seconds "
    "(default: extractive answers, no model).",
)
@click.option("--stream", is_flag=True, help="Ask /question/stream instead of /question.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print rps, p50/p95/p99_ms, errors, rows, rss_mb_max."
)
def bench_api_command(
    seconds: float,
    concurrency: int,
    workers: int | None,
    size: int,
    outage: float,
    port: int | None,
    llm_latency: float,
    stream: bool,
    as_json: bool,
) -> None:
    """Throughput, latency, stored rows and worker memory of the served API under load."""
    from assistant.bench_api import BenchError, bench_api

    settings = load_settings()
    try:
        result = bench_api(
            settings,
            seconds,
            concurrency,
            workers or settings.workers,
            size,
            progress=not as_json,
            outage=outage,
            port=port,
            llm_latency=llm_latency,
            stream=stream,
        )
    except BenchError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    click.echo("\n".join(result.lines()))
