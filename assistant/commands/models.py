"""The models: `ollama status|pull` and `judge` (relevance judgements)."""

from __future__ import annotations

import click

from assistant.commands.common import load_settings


@click.group("ollama")
def ollama_group() -> None:
    """Ollama: whether it has OLLAMA_MODEL (status), and fetching it (pull)."""


@ollama_group.command("status")
def ollama_status() -> None:
    """Say whether Ollama answers and has OLLAMA_MODEL; exit 1 when not."""
    from assistant.llm import OllamaProvider, ProviderError, ollama_model_matches

    settings = load_settings()
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

    provider = OllamaProvider(load_settings())
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


@click.command("judge")
@click.option("--pending", is_flag=True, help="Judge every conversation still PENDING.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many.")
def judge_command(pending: bool, limit: int | None) -> None:
    """LLM-as-judge relevance for stored conversations (JUDGE_PROVIDER, JUDGE_MODEL)."""
    if not pending:
        raise click.UsageError("say which conversations to judge: --pending")
    from assistant.db import open_database
    from assistant.judge import build_judge, judge_pending

    settings = load_settings()
    database = open_database(settings)
    database.migrate()
    judge = build_judge(settings)
    run = judge_pending(database, judge, limit)
    click.echo(
        f"judged {run.judged} with {judge.model}; {run.failed} failed and stay PENDING; "
        f"{run.skipped} already judged elsewhere"
    )
    raise SystemExit(1 if run.failed else 0)
