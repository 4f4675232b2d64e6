"""The relevance judge's results: the conversations waiting for a verdict, and saving one."""

from __future__ import annotations

from typing import Any

from assistant.db.connection import Connections


class Judgements(Connections):
    """Relevance verdicts: `pending_judgements` and `save_judgement`."""

    def pending_judgements(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Conversations still waiting for a relevance verdict, oldest first. A stream the
        customer abandoned delivered nothing to judge: it is left out."""
        with self._connection() as conn:
            return conn.execute(
                """
                SELECT id, question, answer, sources, status, confidence
                FROM conversations WHERE relevance = 'PENDING' AND status <> 'abandoned'
                ORDER BY timestamp, id LIMIT %s
                """,
                (limit,),
            ).fetchall()

    def save_judgement(
        self,
        conversation_id: str,
        *,
        relevance: str,
        explanation: str,
        source: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        tokens_estimated: bool,
    ) -> bool:
        """Record a verdict on a PENDING row and add the judge's cost to the conversation's.

        Only a PENDING row is updated, so a verdict is written once and its cost counted once
        even when the background worker and `assistant judge --pending` race. False when the
        row is unknown or already judged.
        """
        with self._connection() as conn:
            cursor = conn.execute(
                """
                UPDATE conversations SET
                    relevance = %(relevance)s,
                    relevance_explanation = %(explanation)s,
                    relevance_source = %(source)s,
                    judge_model = %(model)s,
                    judged_at = now(),
                    eval_prompt_tokens = %(prompt_tokens)s,
                    eval_completion_tokens = %(completion_tokens)s,
                    eval_total_tokens = %(prompt_tokens)s + %(completion_tokens)s,
                    eval_tokens_estimated = %(tokens_estimated)s,
                    cost_usd = cost_usd + %(cost_usd)s
                WHERE id = %(id)s AND relevance = 'PENDING'
                """,
                {
                    "id": conversation_id,
                    "relevance": relevance,
                    "explanation": explanation,
                    "source": source,
                    "model": model,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "cost_usd": cost_usd,
                    "tokens_estimated": tokens_estimated,
                },
            )
            return cursor.rowcount == 1
