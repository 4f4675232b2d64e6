"""`assistant db check-time`: how PostgreSQL, Python and a stored timestamp each see "now".

The original project's timezone check without its side effect: the probe row is written and
read back inside a transaction that is always rolled back, so no test row reaches the tables.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import psycopg


@dataclass(frozen=True)
class TimeCheck:
    tz: str
    database_timezone: str
    database_time: datetime
    python_time: datetime
    inserted: datetime
    selected: datetime

    @property
    def consistent(self) -> bool:
        """The stored value is the same instant Python wrote (aware datetimes compare so)."""
        return self.python_time == self.inserted == self.selected

    def lines(self) -> list[str]:
        zone = ZoneInfo(self.tz)
        skew = (self.python_time - self.database_time).total_seconds()
        rows = [
            ("database timezone", self.database_timezone),
            ("database time", self.database_time.isoformat()),
            (f"database time ({self.tz})", self.database_time.astimezone(zone).isoformat()),
            (f"python time ({self.tz})", self.python_time.isoformat()),
            ("inserted timestamp", self.inserted.isoformat()),
            (f"inserted ({self.tz})", self.inserted.astimezone(zone).isoformat()),
            ("selected timestamp", self.selected.isoformat()),
            (f"selected ({self.tz})", self.selected.astimezone(zone).isoformat()),
            ("python minus database clock", f"{skew:+.3f} s"),
            ("round trip", "same instant" if self.consistent else "MISMATCH: check column types"),
        ]
        width = max(len(label) for label, _ in rows) + 1
        return [f"{label + ':':<{width}} {value}" for label, value in rows] + [
            "the probe row was rolled back"
        ]


def check_time(url: str, tz: str) -> TimeCheck:
    zone = ZoneInfo(tz)
    probe = f"time-check-{uuid.uuid4().hex}"
    with (
        psycopg.connect(url, autocommit=True) as conn,
        conn.transaction(force_rollback=True),
    ):
        (database_timezone,) = conn.execute("SHOW timezone").fetchone()
        (database_time,) = conn.execute("SELECT clock_timestamp()").fetchone()
        python_time = datetime.now(zone)
        (inserted,) = conn.execute(
            "INSERT INTO conversations (id, question, answer, model_used, response_time,"
            " timestamp) VALUES (%s, 'time check', 'time check', 'time-check', 0, %s)"
            " RETURNING timestamp",
            (probe, python_time),
        ).fetchone()
        (selected,) = conn.execute(
            "SELECT timestamp FROM conversations WHERE id = %s", (probe,)
        ).fetchone()
    return TimeCheck(tz, database_timezone, database_time, python_time, inserted, selected)
