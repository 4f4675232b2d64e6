"""The `assistant` command. Each subcommand wires rooms together; none holds logic of its own."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import replace

import click

from assistant.config import Settings


def _settings() -> Settings:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # pgserver narrates every pg_ctl call at INFO; its warnings are what matter.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    return settings


@click.group()
def main() -> None:
    """Media Support Assistant: grounded answers for streaming-service customers."""


@main.command()
@click.option("--host", default=None, help="Interface to bind (HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (PORT, default 5000).")
@click.option("--workers", type=int, default=None, help="gunicorn workers (WEB_CONCURRENCY).")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the HTTP API with gunicorn."""
    from gunicorn.app.base import BaseApplication

    from assistant.app import create_app
    from assistant.db import embedded_url

    settings = _settings()
    if not settings.database_url:
        # Started once here, before the workers fork, so they all share one cluster.
        settings = replace(settings, database_url=embedded_url(settings.pgdata))
    settings = replace(
        settings,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
    )
    app = create_app(settings)

    class Server(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"{settings.host}:{settings.port}",
                "workers": settings.workers,
                "threads": settings.threads,
                "worker_class": "gthread",
                # The first answer from a cold Ollama model can take minutes.
                "timeout": int(settings.llm_read_timeout) + 30,
                "loglevel": settings.log_level.lower(),
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    click.echo(f"serving on http://{settings.host}:{settings.port}", err=True)
    Server().run()


@main.command()
@click.argument("question")
@click.option("--json", "as_json", is_flag=True, help="Print the same body as POST /question.")
def ask(question: str, as_json: bool) -> None:
    """Ask one question in-process; the exchange is logged like any other."""
    from assistant.app import create_app

    app = create_app(_settings())
    response = app.test_client().post("/question", json={"question": question})
    body = response.get_json()
    if as_json or response.status_code != 200:
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))
        raise SystemExit(0 if response.status_code == 200 else 1)
    click.echo(body["answer"])
    click.echo(
        f"\n[{body['status']} | intent {body['intent']} | confidence {body['confidence']:.2f}"
        f" | {body['provider']}:{body['model_used']} | id {body['conversation_id']}]"
    )


@main.group(invoke_without_command=True)
@click.option("--limit", default=10, show_default=True, help="Rows of the latest conversations.")
@click.pass_context
def db(ctx: click.Context, limit: int) -> None:
    """Show row counts and the latest conversations (subcommands: init)."""
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


@db.command("init")
def db_init() -> None:
    """Apply pending migrations from initdb/ (re-running is a no-op)."""
    from assistant.db import open_database

    applied = open_database(_settings()).migrate()
    click.echo(f"applied: {', '.join(applied)}" if applied else "schema up to date")


@main.command()
@click.option("--kb", "source", required=True, help="A Bitext CSV, a JSON list, a URL or 'demo'.")
def ingest(source: str) -> None:
    """Validate a knowledge-base file and report its documents per intent."""
    from assistant import knowledge

    settings = _settings()
    try:
        kb = knowledge.load_configured(settings, source)
    except knowledge.KnowledgeBaseError as exc:
        raise click.ClickException(str(exc)) from exc
    intents = Counter(doc.intent for doc in kb.documents)
    categories = {doc.intent: doc.category for doc in kb.documents}
    click.echo(
        f"{len(kb)} documents, {len(intents)} intents, "
        f"{len(set(categories.values()))} categories from {kb.source}"
    )
    for intent, count in sorted(intents.items()):
        click.echo(f"  {categories[intent]:<18} {intent:<32} {count:>6}")
