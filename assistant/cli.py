"""The `assistant` command. Each subcommand wires rooms together; none holds logic of its own.
They live in `assistant.commands`, one module per area."""

from __future__ import annotations

import click

from assistant.commands import benchmarks, conversation, data, evaluate, models, serving


@click.group()
def main() -> None:
    """Media Support Assistant: grounded answers for streaming-service customers."""


for command in (
    serving.serve,
    serving.worker,
    conversation.ask,
    conversation.chat,
    conversation.simulate,
    data.db,
    data.gaps,
    data.ingest,
    evaluate.eval_group,
    models.ollama_group,
    models.judge_command,
    benchmarks.bench_group,
):
    main.add_command(command)
