"""Talking to the assistant from a terminal: `ask`, `chat`, and `simulate` (traffic for the
dashboard)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import click

from assistant.commands.common import (
    QUESTIONS_OPTION,
    kb_documents,
    load_settings,
    loading_kb,
)


@click.command()
@click.argument("question", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the same body as POST /question.")
@click.option("--url", default=None, help="Ask this running API instead of answering in-process.")
@click.option("--random", "pick", is_flag=True, help="Ask a random question (see --questions).")
@click.option(
    "--kb",
    default=None,
    help="Answer from this knowledge base (CSV, JSON, a folder of articles, URL or 'demo') "
    "instead of KB_PATH.",
)
@QUESTIONS_OPTION
def ask(
    question: str | None,
    as_json: bool,
    url: str | None,
    pick: bool,
    kb: str | None,
    questions: str | None,
):
    """Ask one question, in-process or of a running API; it is logged like any other."""
    from assistant import chat

    pick = pick or bool(questions)
    if pick and (question or "").strip():
        raise click.UsageError("give a QUESTION or --random, not both")
    if not pick and not (question or "").strip():
        raise click.UsageError("give a QUESTION (in quotes) or --random")
    if kb and url:
        raise click.UsageError("--kb answers in-process; a running API answers from its own KB")
    settings = load_settings()
    if kb:
        settings = replace(settings, kb_source=kb)
    if pick:
        # From the named KB's own questions, unless a question file is given.
        pool = (
            [doc.question for doc in kb_documents(settings, kb)]
            if kb and not questions
            else chat.question_pool(chat.question_file(settings.demo_kb.parent, questions))
        )
        question = random.choice(pool)
        click.echo(f"> {question}", err=True)
    if url:
        body, ok = chat.ask_api(url, question)
    else:
        from assistant.app import create_app

        with loading_kb():
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


@click.command()
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

    from assistant.simulate import SimulationError, default_questions, read_questions
    from assistant.simulate import simulate as run_simulation

    settings = load_settings()
    try:
        pool = read_questions(Path(questions)) if questions else default_questions(settings.demo_kb)
        tally = run_simulation(url, pool, count, feedback_rate, seed=seed)
    except SimulationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(tally.summary())
    raise SystemExit(1 if tally.errors else 0)


@click.command()
@click.option("--url", default=None, help="The API (default: ASSISTANT_URL, else localhost:5000).")
@click.option("--random", "pick", is_flag=True, help="Offer a random question at each prompt.")
@QUESTIONS_OPTION
@click.option("--seed", type=int, default=None, help="Make --random repeatable.")
def chat(url: str | None, pick: bool, questions: str | None, seed: int | None) -> None:
    """Talk to a running API: ask, read the answer and its sources, vote +1/-1 (Ctrl-C leaves)."""
    from assistant import chat as terminal
    from assistant.client import AssistantClient

    settings = load_settings()
    pool = None
    if pick or questions:
        pool = terminal.question_pool(terminal.question_file(settings.demo_kb.parent, questions))
    with AssistantClient(url) as client:
        terminal.run(client, pool, seed)
