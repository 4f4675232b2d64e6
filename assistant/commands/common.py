"""What the commands share: settings with logging set up, common options, loading a KB and
printing figures."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from assistant.config import Settings


def load_settings(service: bool = False) -> Settings:
    """Settings from the environment, with logging set up. A one-shot command logs warnings
    only, unless LOG_LEVEL asks for more: its output is the answer or the figures, and INFO
    lines about loading the KB are noise there. A `service` (serve, worker) logs at
    LOG_LEVEL (INFO by default)."""
    from assistant.privacy import Masker, mask_logs

    settings = Settings.from_env()
    # A mistyped path would leave every reply speaking for nobody, with only a warning.
    demo_profile = settings.demo_kb.parent / "business-profile.yaml"
    if settings.profile_path != demo_profile and not settings.profile_path.is_file():
        raise click.ClickException(
            f"BUSINESS_PROFILE={settings.profile_path}: no such file (a relative path is read "
            f"from {Path.cwd()}). Copy data/business-profile-template.yaml, fill it in and set "
            "BUSINESS_PROFILE to the copy, or unset it for the demo's profile"
        )
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


QUESTIONS_OPTION = click.option(
    "--questions",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Questions for --random (implies it): a CSV with a question or instruction column, or "
    "one per line. Default: data/ground-truth.csv, else the demo KB's phrasings.",
)


def parse_since(ctx: click.Context, param: click.Parameter, value: str):
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


def print_metrics(metrics: dict[str, object], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    for key, value in metrics.items():
        if isinstance(value, list):
            click.echo(f"{key}:")
            click.echo("\n".join(f"  {item}" for item in value))
            continue
        click.echo(f"{key:<34} {value:.4f}" if isinstance(value, float) else f"{key:<34} {value}")


KB_UNLOADABLE = "the knowledge base cannot be loaded"


@contextmanager
def loading_kb() -> Iterator[None]:
    """A knowledge base that cannot be loaded (a missing file, other columns, no entries) is
    a user's mistake: one line and exit 1, as `serve` gives, never a traceback."""
    from assistant.knowledge import KnowledgeBaseError

    try:
        yield
    except KnowledgeBaseError as exc:
        raise click.ClickException(f"{KB_UNLOADABLE}: {exc}") from exc


def kb_documents(settings: Settings, source: str):
    """The documents of the KB `source` (see `loading_kb` for a bad one)."""
    from assistant import knowledge

    with loading_kb():
        return knowledge.load_configured(settings, source).documents


def extractive_assistant(settings: Settings, kb: str):
    """The assistant over `kb` with every decision of the served one, answering
    extractively: what the eval commands measure. Its business profile is the served one's
    (BUSINESS_PROFILE): the company's name is left out of what is searched."""
    from assistant import knowledge
    from assistant.llm import ExtractiveProvider
    from assistant.rag import Assistant, build_retriever, build_signals

    retriever = build_retriever(settings, kb_documents(settings, kb))
    return Assistant(
        retriever,
        ExtractiveProvider(),
        knowledge.load_profile(settings.profile_path),
        signals=build_signals(settings, retriever),
    )


def read_query_file(path: str):
    from assistant.evaluation import read_queries

    try:
        return read_queries(Path(path))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


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
