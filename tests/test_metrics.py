"""`GET /metrics`: the Prometheus series operators scrape, in one process and added up across
gunicorn's workers (prometheus-client's multiprocess mode, as `assistant serve` runs it)."""

from __future__ import annotations

import re

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import running_api

SERIES = (
    "assistant_http_request_duration_seconds",
    "assistant_answers",
    "assistant_tokens",
    "assistant_cost_usd",
    "assistant_llm_errors",
    "assistant_spool_rows",
    "assistant_jobs_queued",
)


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_answers_and_time_routes(client):
    before = _samples(client.get("/metrics").get_data(as_text=True))
    for question in ("how do I cancel my subscription?", "what's the weather in Paris?"):
        assert client.post("/question", json={"question": question}).status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    for name in SERIES:
        assert f"# TYPE {name}" in text, name
    after = _samples(text)
    for status in ("answered", "out_of_scope"):
        key = "assistant_answers_total"
        assert _value(after, key, status=status) - _value(before, key, status=status) == 1
    timed = {"route": "/question", "method": "POST", "status": "200"}
    count = "assistant_http_request_duration_seconds_count"
    assert _value(after, count, **timed) - _value(before, count, **timed) == 2
    assert ("assistant_spool_rows", ()) in after


def test_metrics_add_up_across_gunicorn_workers(embedded_server, tmp_path):
    with running_api(
        embedded_server.get_uri(), tmp_path, WEB_CONCURRENCY="3", RATE_LIMIT=""
    ) as served:
        for _ in range(12):
            # A new connection each: they land on different workers.
            response = requests.post(
                f"{served.url}/question", json={"question": "how do I cancel?"}, timeout=30
            )
            assert response.status_code == 200
        text = requests.get(f"{served.url}/metrics", timeout=10).text
    samples = _samples(text)
    assert _value(samples, "assistant_answers_total", status="answered") == 12
    timed = {"route": "/question", "method": "POST", "status": "200"}
    assert _value(samples, "assistant_http_request_duration_seconds_count", **timed) == 12
    # The samples came from the multiprocess folder, not one worker's memory.
    assert re.search(r"assistant_spool_rows(\{[^}]*\})? 0\.0", text)
