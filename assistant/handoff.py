"""Handoff that reaches a person: a handed-off conversation, posted to the team's helpdesk.

When the assistant hands a conversation off (the customer asked for a person, was frustrated,
or retrieval was unsure), the app stores it with `handoff_delivery = 'queued'` and, in the same
transaction, a `handoff` job (db.save_conversations). A `jobs.JobRunner` runs the job: it
reads the session's transcript back from PostgreSQL, posts it as JSON to HANDOFF_WEBHOOK_URL,
signed with HMAC-SHA256 over the exact body, and records each attempt on the conversation. A
post the receiver does not accept with a 2xx is retried with backoff by the jobs table, up to
HANDOFF_MAX_ATTEMPTS posts; then the conversation is marked `failed`.

A contact the customer gives after the handoff (status `contact`, answers.CONTACT: a message
with an email address or phone number, in a session handed off) is a conversation of its own,
queued and posted the same way, as the event `conversation.contact`, naming the handoff it
follows.

A receiver may see one handoff more than once (its 2xx lost on the way back): the
`X-Assistant-Delivery` header, the conversation id, is the same on every post of it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from assistant.privacy import contact_details

if TYPE_CHECKING:
    from assistant.config import Settings
    from assistant.db import Database

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Assistant-Signature"
DELIVERY_HEADER = "X-Assistant-Delivery"
EVENT = "conversation.handoff"
CONTACT_EVENT = "conversation.contact"
# With the jobs table's backoff (5 s, doubling, at most 10 min) ten posts span about half an
# hour: long enough for a helpdesk's restart or a short outage.
HANDOFF_MAX_ATTEMPTS = 10
# The reasons decisions.Decisions hands off for, as a person reads them in the helpdesk.
REASONS = {
    "requested_human": "the customer asked for a person",
    "frustration": "the customer seemed frustrated",
    "low_confidence": "the assistant was not sure of the answer",
    "language": "the customer wrote in a language the assistant does not answer in",
}


class HandoffPending(RuntimeError):
    """A contact's handoff is still queued (its receiver failing): the contact waits for the
    job's next attempt, so that the receiver never gets it before the handoff it belongs to."""


class MissingSecret(ValueError):
    """HANDOFF_WEBHOOK_URL is set without HANDOFF_WEBHOOK_SECRET."""


class DeliveryFailed(RuntimeError):
    """The receiver did not accept a post: no answer, or a status other than 2xx."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for `body`: `sha256=` and the hex HMAC-SHA256 of the
    exact bytes sent, keyed with HANDOFF_WEBHOOK_SECRET (UTF-8)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str | None) -> bool:
    """Whether `signature` (the header's value) is `sign(secret, body)`, compared in constant
    time. What a receiver does first, before it parses the body."""
    return signature is not None and hmac.compare_digest(sign(secret, body), signature)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _source(source: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": source.get("id"),
        "title": source.get("question"),
        "url": source.get("url") or None,
        "score": source.get("score"),
    }


def handoff_of(row: Mapping[str, Any], turns: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The handoff `row` is posted for: the row itself, or, for a contact given after a handoff,
    the latest handoff of its `turns` (None when that one is no longer stored: purged)."""
    if row["status"] != "contact":
        return row
    return next((turn for turn in reversed(turns) if turn["status"] == "handoff"), None)


def build_payload(
    row: Mapping[str, Any], turns: list[Mapping[str, Any]], region: str = "US"
) -> dict[str, Any]:
    """The JSON object posted for a handed-off conversation `row`, or for a contact given
    after the handoff (`row["status"]` is `contact`), from its session's `turns` (oldest
    first, ending with `row`; see Database.handoff_transcript):

    - `event`: `conversation.handoff`, or `conversation.contact`;
    - `conversation_id` (the row's), `session_id`;
    - `handoff_conversation_id`, `reason` (a code), `reason_text` and `handed_off_at` (ISO
      8601, UTC): those of the handoff, the row itself or, for a contact, the latest handoff
      of the transcript before it (all None when that one is no longer stored: purged);
    - `transcript`: one `{"role": "customer" | "assistant", "text", "at"}` per message;
    - `sources`: the knowledge-base entries (id, title, url, score) of the latest turn that
      had any, what the assistant was working from;
    - `contact`: `{"emails": [...], "phones": [...]}` the customer wrote (phones in E.164), in
      the order given: the last is the latest; empty when none was given, or when
      PII_MASKING masked them before they were stored;
    - `text`: a few readable lines, which a Slack incoming webhook shows: for a handoff the
      whole transcript, for a contact the message that gave it.
    """
    transcript: list[dict[str, str]] = []
    for turn in turns:
        at = _iso(turn["timestamp"])
        transcript.append({"role": "customer", "text": turn["question"], "at": at})
        transcript.append({"role": "assistant", "text": turn["answer"], "at": at})
    sources = next((t["sources"] for t in reversed(turns) if t["sources"]), [])
    emails, phones = contact_details("\n".join(t["question"] for t in turns), region)
    contact = row["status"] == "contact"
    handoff = handoff_of(row, turns)
    reason = reason_text = handed_off_at = handoff_id = None
    if handoff is not None:
        handoff_id, handed_off_at = handoff["id"], _iso(handoff["timestamp"])
        reason = handoff["handoff_reason"] or "requested_human"
        reason_text = REASONS.get(reason, reason)
    if contact:
        given_emails, given_phones = contact_details(row["question"], region)
        lines = [
            f"Contact given after the handoff of conversation {handoff_id}: "
            + ", ".join(given_emails + given_phones),
            f"customer: {row['question']}",
        ]
    else:
        lines = [f"Handoff ({reason_text}), conversation {row['id']}"]
        if emails or phones:
            lines.append("Contact: " + ", ".join(emails + phones))
        lines += [f"{m['role']}: {m['text']}" for m in transcript]
    return {
        "event": CONTACT_EVENT if contact else EVENT,
        "conversation_id": row["id"],
        "session_id": row["session_id"],
        "handoff_conversation_id": handoff_id,
        "reason": reason,
        "reason_text": reason_text,
        "handed_off_at": handed_off_at,
        "transcript": transcript,
        "sources": [_source(source) for source in sources],
        "contact": {"emails": emails, "phones": phones},
        "text": "\n".join(lines),
    }


class HandoffWebhook:
    """Posts handed-off conversations, and contacts given after them, to `url`, signed with
    `secret`, waiting at most `timeout` seconds for the receiver. Raises MissingSecret when
    `secret` is empty: were posts unsigned, anyone who learns the URL could open tickets in the
    team's helpdesk."""

    def __init__(
        self,
        database: Database,
        url: str,
        secret: str | None,
        *,
        timeout: float = 10.0,
        region: str = "US",
    ):
        if not secret:
            raise MissingSecret("HANDOFF_WEBHOOK_SECRET must be set with HANDOFF_WEBHOOK_URL")
        self.database, self.url, self.secret = database, url, secret
        self.timeout, self.region = timeout, region

    def deliver(self, conversation_id: str) -> None:
        """Post one handoff, or a contact given after one, and record the attempt. Raises
        DeliveryFailed when the receiver does not accept it, and HandoffPending for a contact
        whose handoff is still queued, for the job to be retried; returns at once for a
        conversation delivered already or erased meanwhile (`assistant db forget`)."""
        row, turns = self.database.handoff_transcript(conversation_id)
        if row is None or row["handoff_delivery"] == "delivered":
            return
        handoff = handoff_of(row, turns)
        if handoff is not None and handoff is not row and handoff["handoff_delivery"] == "queued":
            # Once the handoff is delivered or has failed for good, the contact goes: its own
            # retries, started later on the same backoff, outlast the handoff's.
            raise HandoffPending("the handoff this contact follows is not delivered yet")
        body = json.dumps(build_payload(row, turns, self.region), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body),
            DELIVERY_HEADER: conversation_id,
            "User-Agent": "media-support-assistant",
        }
        try:
            # No redirects: a 3xx is the receiver's misconfiguration, not an acceptance.
            response = httpx.post(self.url, content=body, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            error = type(exc).__name__
            self.database.record_handoff_attempt(
                conversation_id, delivered=False, http_status=None, error=error
            )
            raise DeliveryFailed(f"no answer from the receiver ({error})") from exc
        status = response.status_code
        self.database.record_handoff_attempt(
            conversation_id,
            delivered=response.is_success,
            http_status=status,
            error=None if response.is_success else f"HTTP {status}",
        )
        if not response.is_success:
            raise DeliveryFailed(f"the receiver answered {status}", status)

    def give_up(self, conversation_id: str) -> None:
        """After the last failed post: the conversation's delivery is `failed`."""
        self.database.record_handoff_failed(conversation_id)


def build_webhook(settings: Settings, database: Database) -> HandoffWebhook | None:
    """The configured webhook, or None without HANDOFF_WEBHOOK_URL. Raises MissingSecret for
    a URL without HANDOFF_WEBHOOK_SECRET."""
    if not settings.handoff_webhook_url:
        return None
    return HandoffWebhook(
        database,
        settings.handoff_webhook_url,
        settings.handoff_webhook_secret,
        timeout=settings.handoff_webhook_timeout,
        region=settings.pii_phone_region,
    )
