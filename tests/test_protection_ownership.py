"""Keys own what they create: conversations, votes and sessions; publishable keys; every route
but the probes keyed; failed keys, /stats and 405 answers. Over the Flask app on the real
PostgreSQL servers, the spool on disk and the machine's Redis."""

from __future__ import annotations

import string
import uuid
from dataclasses import replace

import psycopg
import pytest

from assistant.app import create_app
from assistant.db import Database, migration_files
from assistant.keys import fingerprint
from tests.conftest import free_port, redis_url

SECRET_A, SECRET_B, PUBLISHABLE = "sk-alpha-0123456789", "sk-bravo-0123456789", "pk-widget-0123"
SITE = "https://support.example"
QUESTION = "how do I cancel my subscription?"


def key(value: str, **headers: str) -> dict[str, str]:
    return {"X-API-Key": value, **headers}


@pytest.fixture
def keyed(make_client):
    return make_client(
        api_keys=(SECRET_A, SECRET_B), publishable_keys=(PUBLISHABLE,), cors_origins=(SITE,)
    )


def ask(client, headers, question=QUESTION, session_id=None):
    body = {"question": question, **({"session_id": session_id} if session_id else {})}
    response = client.post("/question", json=body, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_another_key_cannot_read_or_vote_on_a_conversation(keyed, database):
    mine = ask(keyed, key(SECRET_A))["conversation_id"]
    assert keyed.get(f"/conversations/{mine}", headers=key(SECRET_A)).status_code == 200
    theirs = keyed.get(f"/conversations/{mine}", headers=key(SECRET_B))
    # Not 403: another key's conversation is indistinguishable from one that does not exist.
    assert theirs.status_code == 404
    assert theirs.get_json()["error"]["code"] == "conversation_not_found"

    assert (
        keyed.post(
            "/feedback", json={"conversation_id": mine, "feedback": 1}, headers=key(SECRET_A)
        ).status_code
        == 200
    )
    overwrite = {"conversation_id": mine, "feedback": -1, "comment": "not yours"}
    assert keyed.post("/feedback", json=overwrite, headers=key(SECRET_B)).status_code == 404
    stored = database.get_conversation(mine)
    assert (stored["feedback"], stored["feedback_comment"]) == (1, None)
    assert stored["owner"] == fingerprint(SECRET_A)


def test_keys_never_share_a_session(keyed):
    """A question repeated in one session is handed to a person (the customer is going in
    circles): that is how the session's history shows through the API."""
    session = f"chosen-{uuid.uuid4().hex}"
    assert ask(keyed, key(SECRET_A), session_id=session)["status"] == "answered"
    # The same session id under another key is another session: A's turn is not in it.
    intruder = ask(keyed, key(SECRET_B), session_id=session)
    assert intruder["status"] == "answered" and intruder["session_id"] == session
    assert ask(keyed, key(SECRET_A), session_id=session)["status"] == "handoff"


def test_the_server_issues_unguessable_session_ids(keyed):
    first, second = ask(keyed, key(SECRET_A)), ask(keyed, key(SECRET_A))
    issued = first["session_id"]
    # secrets.token_urlsafe(16): 128 random bits in 22 URL-safe characters.
    assert len(issued) >= 22 and set(issued) <= set(string.ascii_letters + string.digits + "-_")
    assert issued != second["session_id"]
    assert ask(keyed, key(SECRET_A), session_id=issued)["status"] == "handoff"


def test_every_route_but_the_probes_needs_a_key(keyed):
    for path in ("/stats", "/conversations/x", "/metrics", "/openapi.json", "/docs/swagger/"):
        response = keyed.get(path)
        assert response.status_code == 401, path
        assert response.get_json()["error"]["code"] == "unauthorized"
    assert keyed.get("/no-such-route").status_code == 401
    for probe in ("/health", "/health/live", "/health/ready"):
        assert keyed.get(probe).status_code == 200, probe
    for path in ("/stats", "/metrics", "/openapi.json", "/docs/swagger/"):
        assert keyed.get(path, headers=key(SECRET_B)).status_code == 200, path
    # Prometheus sends the key as a bearer token.
    bearer = {"Authorization": f"Bearer {SECRET_A}"}
    assert keyed.get("/metrics", headers=bearer).status_code == 200


def test_a_publishable_key_asks_and_votes_from_its_site_only(keyed):
    browser = key(PUBLISHABLE, Origin=SITE)
    answer = ask(keyed, browser)
    vote = {"conversation_id": answer["conversation_id"], "feedback": -1}
    assert keyed.post("/feedback", json=vote, headers=browser).status_code == 200
    # It continues the session the server issued to it...
    assert ask(keyed, browser, session_id=answer["session_id"])["status"] == "handoff"
    # ...but every visitor of the site holds it: it may not pick a session id of its own.
    chosen = keyed.post(
        "/question", json={"question": QUESTION, "session_id": "visitor-1"}, headers=browser
    )
    assert chosen.status_code == 404
    assert chosen.get_json()["error"]["code"] == "session_not_found"

    for path in ("/stats", f"/conversations/{answer['conversation_id']}", "/metrics"):
        refused = keyed.get(path, headers=browser)
        assert refused.status_code == 403, path
        assert refused.get_json()["error"]["code"] == "forbidden"
    for origin in ({"Origin": "https://evil.example"}, {}):
        refused = keyed.post(
            "/question", json={"question": QUESTION}, headers=key(PUBLISHABLE, **origin)
        )
        assert refused.status_code == 403, origin
    # A secret key does not own what the publishable key created.
    assert (
        keyed.get(f"/conversations/{answer['conversation_id']}", headers=key(SECRET_A)).status_code
        == 404
    )


def test_the_widgets_preflight_passes_without_a_key(keyed):
    preflight = keyed.options(
        "/question",
        headers={
            "Origin": SITE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-api-key",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == SITE
    assert "x-api-key" in preflight.headers["Access-Control-Allow-Headers"].lower()


def test_a_key_in_both_lists_is_refused_at_start(settings, assistant, database):
    with pytest.raises(ValueError, match="both"):
        create_app(
            replace(settings, api_keys=("k-1",), publishable_keys=("k-1",)),
            assistant=assistant,
            database=database,
        )


def test_a_thousand_wrong_keys_get_429(make_client):
    client = make_client(api_keys=(SECRET_A,), auth_failure_limit="10/minute")
    codes = [
        client.post("/question", json={"question": QUESTION}, headers=key(f"guess-{i}")).status_code
        for i in range(1000)
    ]
    assert codes[:10] == [401] * 10 and codes[10:] == [429] * 990
    blocked = client.post("/question", json={"question": QUESTION}, headers=key(SECRET_A))
    # The right key is not even compared from a blocked address: no oracle for guessing.
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    assert blocked.get_json()["error"]["code"] == "rate_limited"
    elsewhere = {"REMOTE_ADDR": "10.0.0.7"}
    assert (
        client.post(
            "/question", json={"question": QUESTION}, headers=key(SECRET_A), environ_base=elsewhere
        ).status_code
        == 200
    )


def test_failed_keys_are_counted_across_replicas_in_redis(make_client):
    shared = {
        "api_keys": (SECRET_A,),
        "auth_failure_limit": "20/minute",
        "rate_limit_storage_uri": redis_url(),
        "rate_limit_prefix": f"test-{uuid.uuid4().hex}",
    }
    first, second = make_client(**shared), make_client(**shared)
    codes = [(first if i % 2 else second).get("/stats").status_code for i in range(30)]
    assert codes == [401] * 20 + [429] * 10


def test_stats_has_its_own_limit(make_client):
    client = make_client(api_keys=(SECRET_A,), rate_limit="100/minute", stats_rate_limit="2/minute")
    codes = [client.get("/stats", headers=key(SECRET_A)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    answer = client.post("/question", json={"question": QUESTION}, headers=key(SECRET_A))
    assert answer.status_code == 200


def test_stats_are_cached_for_a_few_seconds(make_client):
    def conversations(client, since: str) -> int:
        response = client.get("/stats", query_string={"since": since}, headers=key(SECRET_A))
        return response.get_json()["conversations"]

    # Starts a second apart, in one 60 s bucket: a dashboard's "since 24 h ago" at each poll.
    cached = make_client(api_keys=(SECRET_A,), stats_cache_seconds=60)
    before = conversations(cached, "2000-01-01T00:00:00Z")
    ask(cached, key(SECRET_A))
    assert conversations(cached, "2000-01-01T00:00:01Z") == before
    # Another window is computed anew, as is every request without the cache.
    assert conversations(cached, "2000-01-02T00:00:00Z") > before
    fresh = make_client(api_keys=(SECRET_A,), stats_cache_seconds=0)
    assert conversations(fresh, "2000-01-01T00:00:00Z") > before


def test_405_carries_allow(client):
    response = client.get("/question")
    assert response.status_code == 405 and response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"POST", "OPTIONS"}


def test_the_spool_keeps_the_owner(settings, assistant, own_database, tmp_path):
    """Answered while PostgreSQL is away (nothing listens at its address), then replayed."""
    away = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/x", settings.migrations_dir)
    app = create_app(
        replace(settings, api_keys=(SECRET_A, SECRET_B), data_dir=tmp_path),
        assistant=assistant,
        database=away,
    )
    client = app.test_client()
    try:
        spooled = ask(client, key(SECRET_A))["conversation_id"]
        vote = {"conversation_id": spooled, "feedback": -1}
        assert client.post("/feedback", json=vote, headers=key(SECRET_A)).status_code == 202
        # With the database away, ids cannot be checked: any vote is queued, and checked on
        # replay, where B's is dropped and A's stays.
        overwrite = {**vote, "feedback": 1}
        assert client.post("/feedback", json=overwrite, headers=key(SECRET_B)).status_code == 202
        assert app.extensions["spool"].replay(own_database) == 3
    finally:
        app.extensions["flusher"].stop()
        away.close()
    stored = own_database.get_conversation(spooled, fingerprint(SECRET_A))
    assert stored["feedback"] == -1
    assert own_database.get_conversation(spooled, fingerprint(SECRET_B)) is None


def test_rows_stored_before_owners_keep_everything(fresh_database_url, settings):
    """Migration 005 adds the owner column to a table that holds rows: none is lost, and with
    keys on no key can read the ownerless ones."""
    migrations = migration_files(settings.migrations_dir)
    earlier = [path for version, path in migrations if version < "005"]
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        for path in earlier:
            conn.execute(path.read_text())
        conn.execute(
            "INSERT INTO conversations (id, question, answer, model_used, response_time)"
            " VALUES ('before-keys', 'q', 'a', 'extractive', 0.1)"
        )
    database = Database(fresh_database_url, settings.migrations_dir)
    try:
        assert "005" in database.migrate()
        row = database.get_conversation("before-keys")
        assert row["question"] == "q" and row["owner"] is None
        assert database.get_conversation("before-keys", fingerprint(SECRET_A)) is None
    finally:
        database.close()


def test_behind_a_proxy_failed_keys_count_per_forwarded_client(make_client):
    """With TRUSTED_PROXY_HOPS=1 (compose: behind `lb`) each client has its own count, from
    the address the proxy appends; without it, X-Forwarded-For is the client's to forge and is
    not read."""
    proxied = make_client(api_keys=(SECRET_A,), auth_failure_limit="3/minute", trusted_proxy_hops=1)

    def guesses(client, forwarded_for: str) -> list[int]:
        headers = key("wrong", **{"X-Forwarded-For": forwarded_for})
        return [client.get("/stats", headers=headers).status_code for _ in range(4)]

    assert guesses(proxied, "198.51.100.1") == [401, 401, 401, 429]
    assert guesses(proxied, "198.51.100.2") == [401, 401, 401, 429]
    direct = make_client(api_keys=(SECRET_A,), auth_failure_limit="3/minute")
    assert guesses(direct, "198.51.100.1") == [401, 401, 401, 429]
    assert guesses(direct, "198.51.100.2") == [429] * 4


def test_a_storage_that_is_down_leaves_keys_checked_and_requests_answered(make_client):
    """Redis away (nothing listens at its address): no 5xx, wrong keys still 401, right ones
    still answered; only the counting stops."""
    client = make_client(
        api_keys=(SECRET_A,),
        auth_failure_limit="1/minute",
        rate_limit_storage_uri=f"redis://127.0.0.1:{free_port()}/0",
    )
    codes = [client.get("/stats", headers=key("wrong")).status_code for _ in range(3)]
    assert codes == [401] * 3
    assert client.get("/stats", headers=key(SECRET_A)).status_code == 200
