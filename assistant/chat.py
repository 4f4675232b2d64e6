"""The terminal side of `assistant chat` and `assistant ask --url/--random`: ask a running API,
show the answer with its sources, intent and status, and send the customer's vote."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import click
import questionary

from assistant.client import ApiError, AssistantClient, answer_facts, feedback_note
from assistant.simulate import SimulationError, read_questions

GROUND_TRUTH = "ground-truth.csv"
QUIT_WORDS = {"exit", "quit", "bye", ":q"}
# "skip" comes first, so the menu starts on it: Enter alone, or typing that matches no choice,
# records no vote rather than a thumbs-up the customer did not give.
VOTES = {"skip": 0, "+1  helpful": 1, "-1  not helpful": -1}


def question_file(bundled_data: Path, questions: str | None) -> Path:
    """`questions` when given; else the ground truth in data/, or the demo KB's phrasings."""
    if questions:
        return Path(questions)
    ground_truth = bundled_data / GROUND_TRUTH
    return ground_truth if ground_truth.is_file() else bundled_data / "demo-kb.csv"


def question_pool(path: Path) -> list[str]:
    try:
        return read_questions(path)
    except (OSError, SimulationError) as exc:
        raise click.ClickException(str(exc)) from exc


def ask_api(url: str, question: str) -> tuple[dict[str, Any], bool]:
    """The /question body, or the error in the API's own shape, and whether it succeeded."""
    try:
        with AssistantClient(url) as client:
            return client.question(question), True
    except ApiError as exc:
        return {"error": {"code": exc.code, "message": exc.message}}, False


def summary_line(body: dict[str, Any]) -> str:
    """`[answered | intent X | confidence 0.93 | provider:model | id ...]` (`answer_facts`)."""
    return "[" + " | ".join([*answer_facts(body), f"id {body['conversation_id']}"]) + "]"


def source_lines(body: dict[str, Any]) -> list[str]:
    if not body["sources"]:
        return ["Sources: none"]
    return ["Sources:"] + [
        f"  {n}. {source['question']}  ({source['intent']}, score {source['score']:.2f})"
        for n, source in enumerate(body["sources"], start=1)
    ]


def show_answer(client: AssistantClient, question: str, session_id: str | None) -> dict:
    """Print the answer as it arrives, then its sources and status line; return the body."""
    click.echo(click.style("Assistant: ", fg="cyan", bold=True), nl=False)
    body: dict[str, Any] = {}
    for kind, data in client.stream(question, session_id):
        if kind == "delta":
            click.echo(data, nl=False)
        elif kind == "reset":
            click.echo(click.style(" [interrupted; the help-centre answer follows]", dim=True))
        else:
            body = data
    click.echo("\n")
    for line in source_lines(body):
        click.echo(click.style(line, dim=True))
    click.echo(click.style(summary_line(body), fg="yellow"))
    return body


def _vote(client: AssistantClient, conversation_id: str) -> None:
    """Ask for the customer's vote and send it. Arrow keys pick a choice, and typing filters
    the choices, so a typed (or piped) `-1` or `+1` followed by Enter records that vote; the
    j/k keys are off because they would be read as filter text."""
    choice = questionary.select(
        "Was this answer helpful?",
        choices=list(VOTES),
        use_search_filter=True,
        use_jk_keys=False,
    ).unsafe_ask()
    if not VOTES[choice]:
        return
    try:
        reply = client.feedback(conversation_id, VOTES[choice])
    except ApiError as exc:
        click.echo(click.style(f"feedback not saved: {exc}", fg="red"))
        return
    click.echo(click.style(f"feedback {choice.split()[0]} {feedback_note(reply)}", fg="green"))


def degraded_note(health: dict) -> str:
    """One line on what a degraded API still does, from its /health body."""
    parts = []
    if health.get("database") == "down":
        parts.append("its database is down; answers are kept and stored when it is back")
    if health.get("spool_status") == "failing":
        parts.append("its spool cannot write, so answers are not being kept")
    if health.get("provider_status") == "degraded":
        parts.append("its answer model is failing; answers come from the help-centre entries")
    return "The API is degraded: " + ("; ".join(parts) or "see its /health") + "."


def run(client: AssistantClient, pool: list[str] | None = None, seed: int | None = None) -> None:
    """Question, answer, vote, until the user says bye or presses Ctrl-C / Ctrl-D.

    With a `pool`, each prompt offers a random question from it: Enter on an empty line asks it.
    """
    try:
        health = client.health()
    except ApiError as exc:
        raise click.ClickException(str(exc)) from exc
    knowledge_base = health["knowledge_base"]
    click.echo(
        f"Connected to {client.url} ({health['provider']}:{health['model']}, "
        f"{knowledge_base['documents']} documents, {knowledge_base['source']} KB). "
        "'exit' or Ctrl-C leaves."
    )
    if health.get("status") != "ok":
        click.echo(click.style(degraded_note(health), fg="yellow"))
    rng = random.Random(seed)
    session_id = None
    try:
        while True:
            suggestion = rng.choice(pool) if pool else ""
            placeholder = f"{suggestion}  (Enter asks it)" if suggestion else None
            typed = questionary.text("You:", placeholder=placeholder).unsafe_ask().strip()
            if typed.lower() in QUIT_WORDS:
                break
            question = typed or suggestion
            if not question:
                continue
            try:
                body = show_answer(client, question, session_id)
            except ApiError as exc:
                click.echo(click.style(f"\n{exc}", fg="red"))
                continue
            session_id = body["session_id"]
            _vote(client, body["conversation_id"])
    except (KeyboardInterrupt, EOFError):
        click.echo()
    click.echo("Bye.")
