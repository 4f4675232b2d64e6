"""The stored data and the knowledge base: `db` (counts, init, check-time, purge, forget),
`gaps`, `ingest`."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import click

from assistant.commands.common import (
    load_settings,
    loading_kb,
    parse_since,
)

# Duplicates `ingest` names one by one; the rest are counted.
SHOWN_REPEATS = 10


@click.group(invoke_without_command=True)
@click.option("--limit", default=10, show_default=True, help="Rows of the latest conversations.")
@click.pass_context
def db(ctx: click.Context, limit: int) -> None:
    """Show row counts and the latest conversations (subcommands: init, check-time, purge,
    forget)."""
    if ctx.invoked_subcommand is not None:
        return
    from assistant.db import open_database

    database = open_database(load_settings())
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

    applied = open_database(load_settings()).migrate()
    click.echo(f"applied: {', '.join(applied)}" if applied else "schema up to date")


@db.command("check-time")
def db_check_time() -> None:
    """Print database, Python and stored-timestamp times (the probe row is rolled back)."""
    from zoneinfo import ZoneInfoNotFoundError

    from assistant.db import open_database
    from assistant.timecheck import check_time

    settings = load_settings()
    database = open_database(settings)
    database.migrate()
    try:
        result = check_time(database.url, settings.tz)
    except ZoneInfoNotFoundError as exc:
        raise click.ClickException(f"TZ={settings.tz!r} is not a known time zone") from exc
    click.echo("\n".join(result.lines()))
    raise SystemExit(0 if result.consistent else 1)


def _erase(run: Callable[..., dict]) -> None:
    """`run(database, spool)` (retention.purge or retention.forget) on the configured database
    and this host's spool; prints the record it returns."""
    from assistant import retention
    from assistant.db import open_database
    from assistant.spool import UNAVAILABLE, Spool

    settings = load_settings()
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


@click.command()
@click.option(
    "--since",
    default="30d",
    show_default=True,
    callback=parse_since,
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

    settings = load_settings()
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
        nearest = f"; nearest {gap.nearest}" if gap.nearest else ""
        click.echo(f"{gap.count:>5}  {gap.question}  [{why}{nearest}]")
        for example in gap.examples[1:]:
            click.echo(f"{'':>7}also: {example}")
    if csv_path:
        kb_gaps.write_csv(found, Path(csv_path))
        click.echo(f"wrote {len(found)} groups to {csv_path}", err=True)


@click.command()
@click.option(
    "--kb",
    "source",
    required=True,
    help="A Q&A CSV or JSON file, a folder of Markdown/HTML articles, a URL or 'demo'.",
)
@click.option(
    "--ids",
    "list_ids",
    is_flag=True,
    help="Instead of the report, print every entry's id and question as CSV (id,question): "
    "the ids a queries file for `eval retrieval` names. Builds no index.",
)
def ingest(source: str, list_ids: bool) -> None:
    """Load a knowledge base, build and cache its index (embeddings included), and report its
    entries, duplicates, empty entries, categories and the placeholders the business profile
    does not fill."""
    from assistant import knowledge, replies
    from assistant.rag import build_retriever, demo_profile_on_own_kb, template_profile

    settings = load_settings()
    with loading_kb():
        kb = knowledge.load_configured(settings, source)
    if list_ids:
        # The csv module quotes a question holding a comma, quote or line break.
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["id", "question"])
        writer.writerows((doc.id, doc.question) for doc in kb.documents)
        click.echo(out.getvalue(), nl=False)
        return
    retriever = build_retriever(settings, kb.documents)
    topics = Counter(doc.topic for doc in kb.documents)
    categories = Counter(doc.category or "-" for doc in kb.documents)
    named = set(categories) != {"-"}
    labelled = "intent model" if retriever.labelled else "hybrid ranking"
    alternates = sum(len(doc.alternates) for doc in kb.documents)
    click.echo(
        f"{len(kb)} entries from {kb.source}: {kb.report.duplicates} duplicates dropped, "
        f"{kb.report.empty} empty entries skipped; "
        f"{f'{alternates} alternate questions; ' if alternates else ''}"
        f"{f'{len(categories)} categories' if named else 'no categories'}, "
        f"{len(topics)} {'intents' if retriever.labelled else 'topics'} ({labelled}; "
        f"embeddings: {retriever.encoder.name if retriever.encoder else 'none'})"
    )
    for category, count in sorted(categories.items()) if named else ():
        click.echo(f"  {category:<32} {count:>6}")
    # Which ones: a newcomer's help centre lost 9 sections to duplicates and could not tell.
    for dropped, kept in kb.report.repeats[:SHOWN_REPEATS]:
        click.echo(f"  duplicate dropped: {dropped} (same question and answer as {kept})")
    if len(kb.report.repeats) > SHOWN_REPEATS:
        click.echo(f"  ... and {len(kb.report.repeats) - SHOWN_REPEATS} more duplicates")
    profile = knowledge.load_profile(settings.profile_path)
    # "(BUSINESS_PROFILE)" alone read as if a newcomer had set it, on the demo's profile.
    demo = demo_profile_on_own_kb(settings, profile, source)
    click.echo(
        f"{'the demo' if demo else 'business'} profile {settings.profile_path} "
        f"(BUSINESS_PROFILE): replies speak for {profile.company_name} and give its contact "
        "details"
        + (
            "; for your own, copy data/business-profile-template.yaml, fill it in and set "
            "BUSINESS_PROFILE to it"
            if demo
            else ""
        )
    )
    if template_profile(settings, profile):
        click.echo(
            f"warning: the business profile is the template's example ({profile.company_name}):"
            " put your company's name and contact details in it"
        )
    own = replies.unfilled(profile)
    if own:
        # Not an error: a business without a phone line leaves CUSTOMER_SUPPORT_PHONE empty.
        click.echo(
            f"note: the business profile leaves {len(own)} of the assistant's own "
            "placeholders empty; fine for a channel the business does not have (declines and "
            "handoffs name only the contact details it fills):"
        )
        for name in own:
            contact = name in replies.CHANNELS or name == replies.HOURS
            shown = "left out" if contact else f"read as {profile.value(name)!r}"
            click.echo(f"  {{{{{name}}}}}: {shown}")
    unfilled = {
        name: count
        for name, count in knowledge.placeholders(kb.documents).items()
        if not profile.filled(name)
    }
    if unfilled:
        click.echo(
            f"{len(unfilled)} placeholders the business profile ({settings.profile_path}) does "
            "not fill; customers would read them as words:"
        )
        for name, count in sorted(unfilled.items()):
            click.echo(f"  {{{{{name}}}}} ({count}) -> {profile.value(name)!r}")
    else:
        click.echo(
            f"every placeholder {'of the knowledge base ' if own else ''}is filled by the "
            "business profile"
        )
