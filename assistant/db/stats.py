"""The figures the dashboard, /stats and `assistant gaps` read, aggregated in SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import sql

from assistant.db.connection import Connections

# What the KB failed since %(since)s, for `assistant gaps` and the dashboard's panel: declined
# (out of scope), handed off because retrieval was unsure, or voted down.
_FAILED_QUESTIONS = sql.SQL("""
    SELECT c.question, c.timestamp, coalesce(c.intent, '') AS nearest,
           CASE WHEN c.status = 'out_of_scope' THEN 'declined'
                WHEN c.status = 'handoff' AND c.handoff_reason = 'low_confidence'
                    THEN 'low_confidence'
                ELSE 'voted_down' END AS reason
    FROM conversations c LEFT JOIN feedback f ON f.conversation_id = c.id
    WHERE c.timestamp >= %(since)s
      AND (c.status = 'out_of_scope'
           OR (c.status = 'handoff' AND c.handoff_reason = 'low_confidence')
           OR f.feedback = -1)
""")
_GAP_QUESTIONS = sql.SQL("{} ORDER BY c.timestamp DESC LIMIT %(limit)s").format(_FAILED_QUESTIONS)
# Identical wordings only: `assistant gaps` groups paraphrases, with embeddings SQL lacks.
_GAPS_PANEL = sql.SQL("""
    WITH failed AS ({})
    SELECT min(question) AS question, count(*) AS times,
           count(*) FILTER (WHERE reason = 'declined') AS declined,
           count(*) FILTER (WHERE reason = 'low_confidence') AS low_confidence,
           count(*) FILTER (WHERE reason = 'voted_down') AS voted_down,
           max(timestamp) AS last_asked
    FROM failed GROUP BY lower(btrim(question))
    ORDER BY times DESC, last_asked DESC LIMIT 10
""").format(_FAILED_QUESTIONS)


class Stats(Connections):
    """Read-only reports: `stats` (the dashboard's figures) and `gap_questions` (the
    questions the knowledge base failed)."""

    def gap_questions(self, since: datetime, limit: int = 2000) -> list[dict[str, Any]]:
        """The questions since `since` that the knowledge base failed, the latest `limit`:
        each with `question`, `timestamp`, `nearest` (the entry or intent retrieval ranked
        first, '' when none) and `reason`: `declined` (out of scope), `low_confidence`
        (handed off because retrieval was unsure) or `voted_down`."""
        with self._connection() as conn:
            return conn.execute(
                _GAP_QUESTIONS,
                {"since": since, "limit": limit},
            ).fetchall()

    def stats(self, since: datetime) -> dict[str, Any]:
        """The dashboard's figures for conversations since `since`, aggregated in SQL.

        Like the Grafana panels, votes count by when they were given, everything else by when
        the conversation took place; `fallback` is an answer the extractive fallback gave.

        Outcomes, over the conversations that are support questions, neither small talk nor a
        contact given after a handoff (that one is counted in `status_mix` only, never as a
        handoff of its own; None without any):
        `resolution_rate`, the share answered, not voted down, and not followed by another
        question of the session within 10 minutes (an answer younger than that
        counts as resolved until one comes); `handoff_rate`, the share handed off, and
        `handoff_rate_by_reason` ({reason: share}, reasons with a handoff only); `csat`, the
        share of thumbs up among the votes given (the same as `feedback.satisfaction`).
        `knowledge_gaps`: the 10 questions most often failed (declined, handed off for low
        confidence, voted down), identical wordings counted together.
        """
        params = {"since": since}
        with self._connection() as conn, conn.transaction():
            # One snapshot, so the figures agree with each other while answers keep arriving.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            summary = conn.execute(
                """
                SELECT count(*) AS conversations,
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY c.response_time) AS p50,
                       percentile_cont(0.95) WITHIN GROUP (ORDER BY c.response_time) AS p95,
                       avg(c.response_time) AS mean,
                       coalesce(sum(c.cost_usd), 0) AS cost_usd,
                       avg((c.status = 'answered' AND f.feedback IS DISTINCT FROM -1
                            -- "no further question": another message of the session, not
                            -- small talk (a "thanks" is no sign of a failed answer) nor a
                            -- contact given after a handoff (no question either), within
                            -- 10 minutes; the Grafana panel holds the same condition
                            AND NOT EXISTS (
                                SELECT 1 FROM conversations n
                                WHERE n.session_id = c.session_id
                                  AND n.timestamp > c.timestamp
                                  AND n.timestamp <= c.timestamp + interval '10 minutes'
                                  AND n.status NOT IN ('small_talk', 'contact')))::int)
                           FILTER (WHERE c.status NOT IN ('small_talk', 'contact'))::float
                           AS resolution_rate,
                       avg((c.status = 'handoff')::int)
                           FILTER (WHERE c.status NOT IN ('small_talk', 'contact'))::float
                           AS handoff_rate,
                       coalesce(sum(c.prompt_tokens), 0) AS prompt,
                       coalesce(sum(c.completion_tokens), 0) AS completion,
                       coalesce(sum(c.eval_total_tokens), 0) AS judge,
                       count(*) FILTER (WHERE c.relevance = 'RELEVANT') AS "RELEVANT",
                       count(*) FILTER (WHERE c.relevance = 'PARTLY_RELEVANT')
                           AS "PARTLY_RELEVANT",
                       count(*) FILTER (WHERE c.relevance = 'NON_RELEVANT') AS "NON_RELEVANT",
                       count(*) FILTER (WHERE c.relevance = 'PENDING') AS "PENDING",
                       count(*) FILTER (WHERE c.relevance = 'UNJUDGED') AS "UNJUDGED"
                FROM conversations c LEFT JOIN feedback f ON f.conversation_id = c.id
                WHERE c.timestamp >= %(since)s
                """,
                params,
            ).fetchone()
            handoffs = conn.execute(
                """
                SELECT coalesce(handoff_reason, 'unspecified') AS reason,
                       count(*)::float / (
                           SELECT count(*) FROM conversations
                           WHERE timestamp >= %(since)s
                             AND status NOT IN ('small_talk', 'contact')
                       ) AS rate
                FROM conversations WHERE timestamp >= %(since)s AND status = 'handoff'
                GROUP BY 1 ORDER BY 2 DESC, 1
                """,
                params,
            ).fetchall()
            feedback = conn.execute(
                """
                SELECT count(*) FILTER (WHERE feedback = 1) AS thumbs_up,
                       count(*) FILTER (WHERE feedback = -1) AS thumbs_down,
                       avg((feedback = 1)::int)::float AS satisfaction
                FROM feedback WHERE timestamp >= %(since)s
                """,
                params,
            ).fetchone()
            hourly = conn.execute(
                """
                SELECT date_bin('1 hour', timestamp, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour,
                       count(*) AS conversations,
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY response_time) AS p50,
                       percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time) AS p95,
                       sum(cost_usd) AS cost_usd
                FROM conversations WHERE timestamp >= %(since)s
                GROUP BY 1 ORDER BY 1
                """,
                params,
            ).fetchall()
            status_mix = conn.execute(
                """
                SELECT CASE WHEN fallback AND status = 'answered' THEN 'fallback' ELSE status END
                           AS status,
                       count(*) AS conversations
                FROM conversations WHERE timestamp >= %(since)s
                GROUP BY 1 ORDER BY 2 DESC, 1
                """,
                params,
            ).fetchall()
            by_model = conn.execute(
                """
                SELECT model_used AS model, count(*) AS conversations, sum(cost_usd) AS cost_usd,
                       sum(prompt_tokens) AS prompt_tokens,
                       sum(completion_tokens) AS completion_tokens,
                       sum(eval_total_tokens) AS judge_tokens
                FROM conversations WHERE timestamp >= %(since)s
                GROUP BY model_used ORDER BY 3 DESC, 2 DESC, 1
                """,
                params,
            ).fetchall()
            top_intents = conn.execute(
                """
                SELECT c.intent, count(*) AS conversations,
                       count(*) FILTER (WHERE f.feedback = -1) AS thumbs_down
                FROM conversations c LEFT JOIN feedback f ON f.conversation_id = c.id
                WHERE c.timestamp >= %(since)s AND c.intent IS NOT NULL
                      AND c.status <> 'out_of_scope'
                GROUP BY c.intent ORDER BY 2 DESC, 1 LIMIT 10
                """,
                params,
            ).fetchall()
            # The dashboard's Knowledge gaps panel: identical wordings only (`assistant gaps`
            # groups paraphrases, with embeddings SQL does not have).
            gaps = conn.execute(
                _GAPS_PANEL,
                params,
            ).fetchall()
        tokens = {key: summary[key] for key in ("prompt", "completion", "judge")}
        return {
            "since": since,
            "conversations": summary["conversations"],
            "response_time": {key: summary[key] for key in ("p50", "p95", "mean")},
            "resolution_rate": summary["resolution_rate"],
            "handoff_rate": summary["handoff_rate"],
            "handoff_rate_by_reason": {row["reason"]: row["rate"] for row in handoffs},
            "csat": feedback["satisfaction"],
            "cost_usd": summary["cost_usd"],
            "tokens": {**tokens, "total": sum(tokens.values())},
            "relevance": {
                key: summary[key]
                for key in ("RELEVANT", "PARTLY_RELEVANT", "NON_RELEVANT", "PENDING", "UNJUDGED")
            },
            "feedback": feedback,
            "hourly": hourly,
            "status_mix": status_mix,
            "cost_by_model": by_model,
            "top_intents": top_intents,
            "knowledge_gaps": gaps,
        }
