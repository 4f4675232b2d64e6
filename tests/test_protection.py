import uuid

import requests

from assistant.config import Settings
from tests.conftest import redis_url, running_api

QUESTION = {"question": "how do I cancel my subscription?"}


def test_settings_read_keys_limit_and_origins():
    settings = Settings.from_env(
        env={"API_KEYS": " k1, k2 ,", "RATE_LIMIT": "5/second", "CORS_ORIGINS": "https://a.example"}
    )
    assert settings.api_keys == ("k1", "k2") and settings.rate_limit == "5/second"
    assert settings.cors_origins == ("https://a.example",)
    assert "k1" not in repr(settings) and "api_keys" not in settings.public()
    assert Settings.from_env(env={}).api_keys == ()


def test_settings_read_publishable_keys_and_the_abuse_limits():
    settings = Settings.from_env(
        env={
            "PUBLISHABLE_KEYS": "pk-1, pk-2",
            "AUTH_FAILURE_LIMIT": "5/minute",
            "STATS_RATE_LIMIT": "",
            "STATS_CACHE_SECONDS": "2.5",
        }
    )
    assert settings.publishable_keys == ("pk-1", "pk-2") and settings.keys_required
    assert "pk-1" not in repr(settings) and "publishable_keys" not in settings.public()
    assert (settings.auth_failure_limit, settings.stats_rate_limit) == ("5/minute", "")
    assert settings.stats_cache_seconds == 2.5
    defaults = Settings.from_env(env={})
    assert not defaults.keys_required and defaults.auth_failure_limit == "10/minute"
    assert (defaults.stats_rate_limit, defaults.stats_cache_seconds) == ("30/minute", 5.0)


def test_post_without_a_valid_key_is_401(make_client):
    client = make_client(api_keys=("secret-1", "secret-2"))
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
        response = client.post("/question", json=QUESTION, headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"
    response = client.post("/feedback", json={"conversation_id": "x", "feedback": 1})
    assert response.status_code == 401
    assert (
        client.post("/question", json=QUESTION, headers={"X-API-Key": "secret-2"}).status_code
        == 200
    )
    # Reads stay open: health checks and dashboards carry no key.
    assert client.get("/health").status_code == 200


def test_no_keys_configured_means_auth_is_off(make_client):
    assert make_client().post("/question", json=QUESTION).status_code == 200


def test_rate_limit_is_429_with_retry_after_and_per_key(make_client):
    client = make_client(api_keys=("key-a", "key-b"), rate_limit="2/minute")
    a, b = {"X-API-Key": "key-a"}, {"X-API-Key": "key-b"}
    assert [client.post("/question", json=QUESTION, headers=a).status_code for _ in range(2)] == [
        200,
        200,
    ]
    response = client.post("/question", json=QUESTION, headers=a)
    assert response.status_code == 429 and response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) > 0
    # Another key has its own budget; health is never throttled.
    assert client.post("/question", json=QUESTION, headers=b).status_code == 200
    assert all(client.get("/health").status_code == 200 for _ in range(4))


def test_rate_limit_falls_back_to_the_client_address(make_client):
    client = make_client(rate_limit="1/minute")
    assert client.post("/question", json=QUESTION).status_code == 200
    assert client.post("/question", json=QUESTION).status_code == 429
    other = {"REMOTE_ADDR": "10.0.0.9"}
    assert client.post("/question", json=QUESTION, environ_base=other).status_code == 200


def test_cors_only_for_configured_origins(make_client):
    origin = {"Origin": "https://support.example"}
    closed = make_client().get("/health", headers=origin)
    assert "Access-Control-Allow-Origin" not in closed.headers
    client = make_client(cors_origins=("https://support.example",))
    opened = client.get("/health", headers=origin)
    assert opened.headers["Access-Control-Allow-Origin"] == "https://support.example"
    stranger = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in stranger.headers


def test_client_sends_its_api_key(monkeypatch):
    from assistant.client import AssistantClient

    monkeypatch.delenv("ASSISTANT_API_KEY", raising=False)
    assert "X-API-Key" not in AssistantClient("http://x").http.headers
    assert AssistantClient("http://x", api_key="k1").http.headers["X-API-Key"] == "k1"
    monkeypatch.setenv("ASSISTANT_API_KEY", "k2")
    assert AssistantClient("http://x").http.headers["X-API-Key"] == "k2"


def test_replicas_share_one_limit_in_redis(make_client):
    """Two apps, as two replicas would be, counting in the machine's Redis: together they let
    exactly RATE_LIMIT through. Counted in memory, each lets its own RATE_LIMIT through."""
    shared = {
        "rate_limit": "5/minute",
        "rate_limit_storage_uri": redis_url(),
        "rate_limit_prefix": f"test-{uuid.uuid4().hex}",
    }
    first, second = make_client(**shared), make_client(**shared)
    codes = [
        (first if i % 2 else second).post("/question", json=QUESTION).status_code for i in range(12)
    ]
    assert codes.count(200) == 5 and codes.count(429) == 7, codes

    alone = {"rate_limit": "5/minute", "rate_limit_prefix": f"test-{uuid.uuid4().hex}"}
    first, second = make_client(**alone), make_client(**alone)
    codes = [
        (first if i % 2 else second).post("/question", json=QUESTION).status_code for i in range(12)
    ]
    assert codes.count(200) == 10, codes


def test_gunicorn_workers_share_one_limit_in_redis(embedded_server, tmp_path):
    """`assistant serve` with three workers: one client gets RATE_LIMIT in total, not three
    times it (new connections land on any worker)."""
    env = {
        "RATE_LIMIT": "6/minute",
        "RATE_LIMIT_STORAGE_URI": redis_url(),
        "RATE_LIMIT_PREFIX": f"test-{uuid.uuid4().hex}",
        "WEB_CONCURRENCY": "3",
    }
    with running_api(embedded_server.get_uri(), tmp_path, **env) as served:
        codes = [
            requests.post(f"{served.url}/question", json=QUESTION, timeout=30).status_code
            for _ in range(15)
        ]
    assert codes.count(200) == 6 and codes.count(429) == 9, codes


def test_a_dead_redis_is_one_warning_and_limits_count_in_memory(make_client, caplog):
    """RATE_LIMIT_STORAGE_URI on a port where nothing listens (a Redis that is down): no
    traceback per request, one warning, and the limit still holds, counted in memory."""
    from tests.conftest import free_port

    client = make_client(
        rate_limit="3/minute",
        rate_limit_storage_uri=f"redis://127.0.0.1:{free_port()}/0",
        rate_limit_prefix=f"test-{uuid.uuid4().hex}",
    )
    with caplog.at_level("INFO", logger="flask-limiter"):
        codes = [client.post("/question", json=QUESTION).status_code for _ in range(6)]
    assert codes == [200, 200, 200, 429, 429, 429]
    assert not [r for r in caplog.records if r.exc_info]
    warnings = [r.getMessage() for r in caplog.records if r.levelname != "INFO"]
    assert warnings == ["Rate limit storage unreachable - falling back to in-memory storage"]
