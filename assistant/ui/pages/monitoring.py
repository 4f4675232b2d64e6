"""Monitoring page: the Grafana dashboard's figures from GET /stats, for anyone without Docker
and Grafana. Volume, response time p50/p95, outcomes (resolution, handoff rate, CSAT), quality
(status mix, votes, judged relevance), cost and tokens by model, the top intents and the
knowledge base's gaps."""

from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from assistant.client import ApiError

RANGES = {
    "Last hour": timedelta(hours=1),
    "Last 6 hours": timedelta(hours=6),
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
}


def percent(share: float | None) -> str:
    return "–" if share is None else f"{share:.0%}"


def seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def bars(area, rows: list[dict], index: str, columns: list[str] | None = None, **options):
    """Rows in the order /stats gives them, most first (sort=False keeps it); a range with no
    such rows (only small talk, say) shows a note instead of failing."""
    if not rows:
        area.caption("No data in this time range.")
        return
    table = pd.DataFrame(rows).set_index(index)
    area.bar_chart(table[columns] if columns else table, sort=False, **options)


client = st.session_state.client
st.title("Monitoring")
span = st.selectbox("Time range", list(RANGES), index=2)
try:
    stats = client.stats(datetime.now(UTC) - RANGES[span])
except ApiError as exc:
    st.error(f"No figures: {exc}")
    st.stop()
if not stats["conversations"]:
    st.info("No conversations in this range yet: ask on the Chat page or run `assistant simulate`.")
    st.stop()

columns = st.columns(7)
columns[0].metric("Conversations", stats["conversations"])
columns[1].metric("Response time p50", seconds(stats["response_time"]["p50"]))
columns[2].metric("Response time p95", seconds(stats["response_time"]["p95"]))
columns[3].metric("Resolution rate", percent(stats["resolution_rate"]))
columns[4].metric("Handoff rate", percent(stats["handoff_rate"]))
columns[5].metric("CSAT", percent(stats["csat"]))
columns[6].metric("LLM cost", f"${stats['cost_usd']:.4f}")

hourly = pd.DataFrame(stats["hourly"])
# Hours as labels, not a time axis: a bar stays a bar when there are only a few hours.
hourly["hour"] = pd.to_datetime(hourly["hour"], utc=True).dt.strftime("%Y-%m-%d %H:00")
hourly = hourly.set_index("hour")
left, right = st.columns(2)
left.subheader("Conversations per hour (UTC)")
left.bar_chart(hourly[["conversations"]])
right.subheader("Response time p50 / p95 (s)")
right.bar_chart(hourly[["p50", "p95"]], stack=False)

left, middle, right = st.columns(3)
left.subheader("Answer status mix")
bars(left, stats["status_mix"], "status", horizontal=True)
votes = {"+1": stats["feedback"]["thumbs_up"], "-1": stats["feedback"]["thumbs_down"]}
middle.subheader("+1 / -1")
middle.bar_chart(pd.Series(votes, name="votes"))
right.subheader("Judged relevance")
right.bar_chart(pd.Series(stats["relevance"], name="conversations"))

TOKEN_COLUMNS = ["prompt_tokens", "completion_tokens", "judge_tokens"]
left, right = st.columns(2)
left.subheader("LLM cost (USD) by model")
if any(row["cost_usd"] for row in stats["cost_by_model"]):
    bars(left, stats["cost_by_model"], "model", ["cost_usd"])
else:
    # Empty axes read as a broken chart; extractive answers and local models cost nothing.
    left.caption("No LLM cost yet: answers are extractive, or come from a model without a price.")
right.subheader("Tokens by model")
if any(row[column] for row in stats["cost_by_model"] for column in TOKEN_COLUMNS):
    bars(right, stats["cost_by_model"], "model", TOKEN_COLUMNS)
else:
    right.caption("No LLM tokens yet: answers are extractive.")

st.subheader("Top intents")
bars(st, stats["top_intents"], "intent", horizontal=True, stack=False)

st.subheader("Knowledge gaps")
if stats["knowledge_gaps"]:
    st.caption(
        "Questions declined, handed off for low confidence or voted down, by count. "
        "`assistant gaps` groups their paraphrases too."
    )
    st.dataframe(pd.DataFrame(stats["knowledge_gaps"]), hide_index=True)
else:
    st.caption("No failed questions in this time range.")
