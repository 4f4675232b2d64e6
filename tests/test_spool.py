import os
import time
from contextlib import contextmanager
from dataclasses import replace

import pytest

from assistant.app import create_app
from assistant.db import Database, DatabaseUnavailable
from assistant.spool import Flusher, Spool


class FakeStore:
    """Records what a replay sends; conversations keyed by id as ON CONFLICT does."""

    def __init__(self, down: bool = False):
        self.down = down
        self.conversations: dict[str, dict] = {}
        self.inserts = 0
        self.feedback: dict[str, tuple[int, str | None]] = {}

    def save_conversation(self, row):
        if self.down:
            raise DatabaseUnavailable("down")
        self.inserts += 1
        self.conversations.setdefault(row["id"], row)

    def ping(self):
        return not self.down

    def save_conversations(self, rows):
        for row in rows:
            self.save_conversation(row)

    @contextmanager
    def exclusive(self, key):
        if self.down:
            raise DatabaseUnavailable("down")
        yield True

    def save_feedback(self, conversation_id, feedback, comment, given_at=None, owner=None):
        if conversation_id not in self.conversations:
            return False
        self.feedback[conversation_id] = (feedback, comment)
        return True


def test_appended_lines_survive_a_new_spool_object(tmp_path):
    spool = Spool(tmp_path)
    spool.add_conversation({"id": "c1", "question": "q"})
    spool.add_feedback("c1", -1, "wrong")
    again = Spool(tmp_path)
    assert again.pending() == 2
    assert again.has_conversation("c1") and not again.has_conversation("c2")
    [path] = again.files()
    assert path.read_bytes().endswith(b"\n") and path.read_bytes().count(b"\n") == 2


def test_replay_inserts_then_empties_the_spool_and_is_idempotent(tmp_path):
    spool = Spool(tmp_path)
    spool.add_conversation({"id": "c1", "question": "q"})
    spool.add_feedback("c1", 1, None)
    spool.add_feedback("ghost", 1, None)
    store = FakeStore()
    assert spool.replay(store) == 3
    assert set(store.conversations) == {"c1"} and store.feedback == {"c1": (1, None)}
    assert spool.pending() == 0 and spool.files() == []
    assert spool.replay(store) == 0 and store.inserts == 1


def test_replay_keeps_lines_when_the_database_is_still_down(tmp_path):
    spool = Spool(tmp_path)
    spool.add_conversation({"id": "c1"})
    flusher = Flusher(spool, FakeStore(down=True), interval=60)
    assert flusher.flush() == 0 and spool.pending() == 1


def test_feedback_from_another_process_file_finds_its_conversation(tmp_path):
    first, second = Spool(tmp_path), Spool(tmp_path)
    # Names sort so the feedback file is replayed first.
    first._path, first._pid = tmp_path / "b.jsonl", os.getpid()
    second._path, second._pid = tmp_path / "a.jsonl", first._pid
    first.add_conversation({"id": "c1"})
    second.add_feedback("c1", -1, None)
    store = FakeStore()
    Spool(tmp_path).replay(store)
    assert store.feedback == {"c1": (-1, None)}


def test_torn_last_line_is_skipped_and_does_not_swallow_the_next(tmp_path):
    spool = Spool(tmp_path)
    spool.add_conversation({"id": "c1"})
    with open(spool.path, "ab") as handle:
        handle.write(b'{"kind": "conversation", "row": {"id": "torn"')
    assert Spool(tmp_path).pending() == 1
    spool.add_conversation({"id": "c2"})
    store = FakeStore()
    assert Spool(tmp_path).replay(store) == 2
    assert set(store.conversations) == {"c1", "c2"}


def test_lines_appended_after_a_snapshot_are_kept(tmp_path):
    spool = Spool(tmp_path)
    spool.add_conversation({"id": "c1"})
    store = FakeStore()
    snapshots = spool._snapshots()
    spool.add_conversation({"id": "c2"})
    for snapshot in snapshots:
        spool._consume(snapshot)
    assert [e["row"]["id"] for e in spool.entries()] == ["c2"]
    spool.replay(store)
    assert set(store.conversations) == {"c2"}


@pytest.mark.timeout(300)
def test_no_answer_is_lost_while_postgres_is_down(settings, assistant, tmp_path):
    """The fault test: stop PostgreSQL mid-traffic, restart it, and count every row."""
    import pgserver

    pgdata = tmp_path / "pg"
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    database = Database(server.get_uri(), settings.migrations_dir)
    app = create_app(
        replace(
            settings,
            database_url=database.url,
            data_dir=tmp_path / "data",
            spool_flush_interval=0.5,
        ),
        assistant=assistant,
        database=database,
    )
    client = app.test_client()
    answered: list[str] = []
    outage_votes: dict[str, int] = {}
    try:
        for i in range(12):
            if i == 4:
                server.cleanup()
            response = client.post(
                "/question", json={"question": f"how do I cancel my subscription? ({i})"}
            )
            assert response.status_code == 200, response.get_data(as_text=True)
            answered.append(response.get_json()["conversation_id"])
            if i in (2, 6, 9):
                vote = 1 if i % 2 else -1
                response = client.post(
                    "/feedback", json={"conversation_id": answered[-1], "feedback": vote}
                )
                if i == 2:
                    assert response.status_code == 200
                else:
                    assert response.status_code == 202
                    assert response.get_json()["status"] == "queued"
                    outage_votes[answered[-1]] = vote
        health = client.get("/health")
        assert health.status_code == 503 and health.get_json()["spool"] == 8 + 2

        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        app.extensions["flusher"].flush()
        deadline = time.monotonic() + 30
        while app.extensions["spool"].pending() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert app.extensions["spool"].pending() == 0

        with database.pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, count(*) AS n FROM conversations WHERE id = ANY(%s) GROUP BY id",
                (answered,),
            ).fetchall()
            votes = conn.execute(
                "SELECT conversation_id, feedback FROM feedback WHERE conversation_id = ANY(%s)",
                (list(outage_votes),),
            ).fetchall()
        assert sorted(r["id"] for r in rows) == sorted(answered)
        assert all(r["n"] == 1 for r in rows) and len(set(answered)) == len(answered)
        assert {v["conversation_id"]: v["feedback"] for v in votes} == outage_votes
        health = client.get("/health").get_json()
        assert health["status"] == "ok" and health["spool"] == 0
    finally:
        app.extensions["flusher"].stop()
        database.close()
        server.cleanup()
