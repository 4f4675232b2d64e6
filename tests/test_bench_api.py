"""`assistant bench api`: short real runs of gunicorn, the load process and PostgreSQL.

Nothing here is timed: the figures are checked for their shape and for agreeing with the
database, never for speed.
"""

import json
import socket

import psycopg
import pytest
from click.testing import CliRunner

from assistant.cli import main
from tests.conftest import free_port

KEYS = {
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "errors",
    "ok_responses",
    "rows",
    "rss_mb_max",
    "cpu_ms_per_answer",
    "workers",
    "concurrency",
    "seconds",
    "docs",
}
SHORT_RUN = ["bench", "api", "--seconds", "3", "--concurrency", "2", "--docs", "300"]


@pytest.fixture
def no_dotenv(tmp_path, monkeypatch):
    """Settings read `.env` from the working directory: a developer's must not leak in."""
    monkeypatch.chdir(tmp_path)


def _bench(env: dict[str, str | None]) -> dict:
    result = CliRunner().invoke(main, [*SHORT_RUN, "--workers", "1", "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report.keys() >= KEYS
    assert report["errors"] == 0 and report["ok_responses"] > 0
    assert report["rows"] == report["ok_responses"]
    assert report["workers"] == 1 and report["concurrency"] == 2 and report["docs"] == 300
    assert 0 < report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"]
    assert report["rps"] > 0 and report["rss_mb_max"] > 0 and report["cpu_ms_per_answer"] > 0
    return report


def test_bench_api_logs_every_answer_to_the_configured_database(database_url, no_dotenv):
    report = _bench({"DATABASE_URL": database_url})
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT count(*) FROM conversations").fetchone()[0]
    assert stored >= report["rows"]
    # The conditions travel with the figures: the database (never its password), the cores,
    # and the load the machine carried.
    where = psycopg.conninfo.conninfo_to_dict(database_url)
    assert report["database"].endswith(f"/{where['dbname']}")
    assert "password" not in report["database"]
    assert report["cores"] >= 1 and len(report["load_average"]) == 2


def test_bench_api_serves_on_the_port_it_is_given(database_url, no_dotenv):
    """A free --port is served on; a taken one fails with the port named, so it was used."""
    port = free_port()
    args = [*SHORT_RUN, "--workers", "1", "--port", str(port)]
    result = CliRunner().invoke(main, args, env={"DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    assert "load average" in result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        result = CliRunner().invoke(main, args, env={"DATABASE_URL": database_url})
    assert result.exit_code != 0
    assert str(port) in result.output


def test_bench_api_without_a_database_uses_a_throwaway_one(tmp_path, no_dotenv):
    data = tmp_path / "data"
    _bench({"DATABASE_URL": None, "POSTGRES_HOST": None, "DATA_DIR": str(data)})
    # The embedded cluster lived in a temporary directory, not under the user's data/.
    assert not (data / "pgdata").exists()


def test_bench_api_with_a_slow_model_streams_and_stores_every_answer(database_url, no_dotenv):
    """--llm-latency serves the stand-in model (a fixed latency, which no real model holds);
    --stream reads /question/stream to each `answer` event."""
    result = CliRunner().invoke(
        main,
        [*SHORT_RUN, "--workers", "1", "--llm-latency", "0.5", "--stream", "--json"],
        env={"DATABASE_URL": database_url},
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["errors"] == 0 and report["ok_responses"] > 0
    assert report["rows"] == report["ok_responses"] and report["fallbacks"] == 0
    assert report["stream"] is True and report["llm_latency_s"] == 0.5
    # Both clients waited on the model together: neither queued behind the other.
    assert report["model_peak"] == 2
