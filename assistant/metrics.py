"""Prometheus metrics for operators, at `GET /metrics`.

Under gunicorn each worker is a process of its own: `assistant serve` points
PROMETHEUS_MULTIPROC_DIR at a fresh folder before any worker starts, prometheus-client writes
every process's samples there, and a scrape adds them up (its multiprocess mode). Without the
variable (one process: tests, `flask run`) the default registry is used.

Series (all prefixed `assistant_`):

- `http_request_duration_seconds{route, method, status}`: a histogram of request latency;
- `answers_total{status}`: answers by status (answered, handoff, out_of_scope, ...);
- `tokens_total{model, kind}` and `cost_usd_total{model}`: what the models used and cost;
- `llm_errors_total{error}`: model calls that failed, by error class (the answer fell back);
- `spool_rows` and `jobs_queued`: work waiting, read at scrape time.
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

# prometheus-client picks file-backed values if the variable is set when it is first imported:
# only then are there files to add up (set later, in a process already counting in memory,
# the folder would hold nothing of it). Its own choice is what counts.
MULTIPROCESS = values.ValueClass.__name__ == "MmapedValue"

REQUEST_SECONDS = Histogram(
    "assistant_http_request_duration_seconds",
    "HTTP request latency in seconds, by route, method and status.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ANSWERS = Counter("assistant_answers", "Answers given, by status.", ["status"])
TOKENS = Counter("assistant_tokens", "Model tokens, by model and kind.", ["model", "kind"])
COST = Counter("assistant_cost_usd", "Model cost in USD, by model.", ["model"])
LLM_ERRORS = Counter(
    "assistant_llm_errors", "Model calls that failed (the answer fell back), by error.", ["error"]
)
# Every worker sees the same spool folder and jobs table: the latest reading of a live worker
# is the depth (the largest would keep an idle worker's old one).
SPOOL_ROWS = Gauge(
    "assistant_spool_rows", "Rows waiting in the spool for the database.", multiprocess_mode="max"
)
JOBS_QUEUED = Gauge(
    "assistant_jobs_queued",
    "Background jobs (judgements) waiting in PostgreSQL.",
    multiprocess_mode="livemostrecent",
)


def count_answer(
    status: str, model: str, prompt_tokens: int, completion_tokens: int, cost_usd: float,
    error: str | None,
) -> None:  # fmt: skip
    """Count one stored answer: its status, tokens and cost, and the model error it fell back
    from, if any."""
    ANSWERS.labels(status).inc()
    if prompt_tokens or completion_tokens:
        TOKENS.labels(model, "prompt").inc(prompt_tokens)
        TOKENS.labels(model, "completion").inc(completion_tokens)
    if cost_usd:
        COST.labels(model).inc(cost_usd)
    if error:
        LLM_ERRORS.labels(error).inc()


def instrument(app: Flask) -> None:
    """Time every request, by its route's pattern (one series per route, whatever the ids)."""

    @app.before_request
    def start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def observe(response):
        started = g.pop("metrics_started", None)
        if started is not None:
            route = request.url_rule.rule if request.url_rule else "unmatched"
            REQUEST_SECONDS.labels(route, request.method, str(response.status_code)).observe(
                time.perf_counter() - started
            )
        return response


def exposition(spool_rows: int, jobs_queued: int | None) -> Response:
    """The body of `GET /metrics` (Prometheus text format), with the depths read now (the
    jobs' left as they were while the database is away)."""
    SPOOL_ROWS.set(spool_rows)
    if jobs_queued is not None:
        JOBS_QUEUED.set(jobs_queued)
    registry = REGISTRY
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    # content_type, not mimetype: CONTENT_TYPE_LATEST carries its charset already.
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def worker_exited(pid: int) -> None:
    """gunicorn's child_exit hook: a dead worker's live gauges stop counting."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(pid)
