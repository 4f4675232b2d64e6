"""The assistant's own replies: the decline and the handoffs, worded for one business profile.

They name only the contact channels the profile fills, so a business without a phone line (or
chat, or published hours) is never made to offer one. Their `{{PLACEHOLDERS}}` are filled with
every reply, by `Profile.fill`.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from assistant.knowledge import Document, Profile, humanize
from assistant.retrieval.query import content_words

# The profile's contact channels, in the order the replies name them.
CHANNELS = {
    "LIVE_CHAT_URL": "by live chat at {{LIVE_CHAT_URL}}",
    "CUSTOMER_SUPPORT_EMAIL": "by email at {{CUSTOMER_SUPPORT_EMAIL}}",
    "CUSTOMER_SUPPORT_PHONE": "by phone at {{CUSTOMER_SUPPORT_PHONE}}",
}
HOURS = "CUSTOMER_SUPPORT_HOURS"
# Every placeholder of the assistant's own replies, small talk's included: `ingest` warns of
# those the profile leaves empty.
OWN_PLACEHOLDERS = ("COMPANY_NAME", *CHANNELS, HOURS)
# Ways to talk now, besides waiting for the team's email: what a forwarded handoff offers.
TALK_NOW = ("LIVE_CHAT_URL", "CUSTOMER_SUPPORT_PHONE")
# The decline names at most this many of the KB's categories (the most used; "and more"
# says there are others), or, in a KB without them, this many of its questions, each cut to
# this many characters.
TOPICS_NAMED = 12
EXAMPLES_NAMED = 3
EXAMPLE_WIDTH = 60


def listing(items: Sequence[str], conjunction: str, separator: str = ", ") -> str:
    """`a`, `a or b`, `a, b or c` (with `conjunction` "or"); with `separator` "; ", the
    semicolon goes before the conjunction too (`a; b; or c`)."""
    if len(items) <= 1:
        return "".join(items)
    last = f"; {conjunction}" if separator == "; " else f" {conjunction}"
    return f"{separator.join(items[:-1])}{last} {items[-1]}"


def kb_topics(documents: Sequence[Document], limit: int = TOPICS_NAMED) -> str:
    """What the KB covers, for the decline: its categories, most entries first, or, in a KB
    without categories, a few of its questions from across it (see `example_questions`).
    "your questions" for an empty KB."""
    categories = Counter(doc.category for doc in documents if doc.category)
    if len(categories) >= 2:
        names = [
            humanize(c).lower() if c.isupper() else c for c, _ in categories.most_common(limit)
        ]
        # Semicolons part names that hold commas of their own ("Cars, speakers and watches;
        # Transcripts, chapters and clips"), which read as one list with commas between.
        separator = "; " if any("," in name for name in names) else ", "
        return listing(names + ["more"] * (len(categories) > limit), "and", separator)
    examples = example_questions(documents)
    if not examples:
        return "your questions about our service"
    return "questions such as " + listing([f'"{title}"' for title in examples], "and")


def example_questions(documents: Sequence[Document], count: int = EXAMPLES_NAMED) -> list[str]:
    """One question from each of `count` equal runs of the KB, shortened to EXAMPLE_WIDTH:
    spread over the whole KB, since a FAQ's first rows are often all one area (billing). From
    each run, the shortest question (short enough to read in one sentence) that shares no
    content word with the ones already taken, so two examples do not show one topic ("How do
    credits work?" and "Do my credits expire?"); the shortest, when every one does. The same
    KB gives the same ones."""
    taken = min(count, len(documents))
    runs = [
        documents[i * len(documents) // taken : (i + 1) * len(documents) // taken]
        for i in range(taken)
    ]
    chosen: list[str] = []
    seen: set[str] = set()
    for run in runs:
        by_length = sorted((doc.question for doc in run), key=len)
        fresh = next((q for q in by_length if not content_words(q) & seen), by_length[0])
        chosen.append(fresh)
        seen |= content_words(fresh)
    return [_shortened(title) for title in chosen]


def _shortened(title: str) -> str:
    """`title` cut to EXAMPLE_WIDTH at a word boundary, or mid-word in a script written
    without spaces (Chinese, Japanese), where textwrap would leave nothing but "…"."""
    short = textwrap.shorten(title, EXAMPLE_WIDTH, placeholder="…")
    if short.strip("… ") or len(title) <= EXAMPLE_WIDTH:
        return short
    return title[: EXAMPLE_WIDTH - 1].rstrip() + "…"


def unfilled(profile: Profile) -> list[str]:
    """The placeholders of the assistant's own replies that `profile` leaves empty."""
    return [name for name in OWN_PLACEHOLDERS if not profile.filled(name)]


@dataclass(frozen=True)
class Replies:
    """The decline and handoff texts for one profile. A forwarded `handoff` (the conversation
    reaches the team's helpdesk, HANDOFF_WEBHOOK_URL) promises a person's reply; otherwise it
    only names where to reach them. `contact`, said after a forwarded handoff, reads back
    `{contact}`, the address the customer gave, so a mistyped one is corrected at once."""

    out_of_scope: str
    handoff: str
    contact: str

    @classmethod
    def for_profile(cls, profile: Profile, topics: str, forwarded: bool) -> Replies:
        """The replies for `profile`; `topics` is what the KB covers (see `kb_topics`), and
        `forwarded` says a handoff posts the conversation to the team's helpdesk."""
        every = _reach(profile, CHANNELS)
        talk_now = _reach(profile, TALK_NOW)
        hours, hours_sentence = _hours(profile)
        replying = "They will reply"
        if profile.filled("CUSTOMER_SUPPORT_EMAIL"):
            replying += " from {{CUSTOMER_SUPPORT_EMAIL}}"
        out_of_scope = (
            "I'm sorry, I can't help with that: I'm the {{COMPANY_NAME}} support assistant. I "
            f"can help with {topics}. "
            + (
                f"For anything else, you can reach our team {every}{hours}.{hours_sentence}"
                if every
                else "For anything else, please contact our team directly."
            )
        )
        if forwarded:
            handoff = (
                "I've passed our conversation to a person from our support team, so you won't "
                f"need to repeat yourself. {replying}{hours} to the email address or phone "
                f"number you've given here.{hours_sentence} "
                + (
                    f"If you haven't given one, or would rather talk now, reach them {talk_now}."
                    if talk_now
                    else "If you haven't given one, please write it here."
                )
            )
        elif every:
            # No helpdesk receives the conversation: the reply says where a person is, and
            # promises no contact ("let me connect you" read as one to a newcomer).
            handoff = (
                "A person from our support team can help with this. You can reach them "
                f"{every}{hours}.{hours_sentence}"
            )
        else:
            handoff = (
                "This needs a person from our support team; please contact them directly, as "
                "I can't pass our conversation on from here."
            )
        contact = (
            "Thank you: I've passed {contact} on to the person from our support team who has "
            f"our conversation. {replying}{hours}.{hours_sentence}"
            + (f" If you would rather talk now, reach them {talk_now}." if talk_now else "")
        )
        return cls(out_of_scope, handoff, contact)


def _hours(profile: Profile) -> tuple[str, str]:
    """The profile's support hours for the replies: `(aside, sentence)`. Normally an aside in
    parentheses after the channels, " (9 to 5 on weekdays)", and no sentence. Hours holding
    parentheses of their own ("8 a.m. to 10 p.m. (phone: weekdays only)" read "(… (phone:
    weekdays only))" to a newcomer's customers) are a sentence of their own instead, after
    the one naming the channels: " Our team's hours: …." Both empty without hours."""
    if not profile.filled(HOURS):
        return "", ""
    value = profile.value(HOURS).strip()
    if not any(mark in value for mark in "()"):
        return " ({{CUSTOMER_SUPPORT_HOURS}})", ""
    return "", " Our team's hours: {{CUSTOMER_SUPPORT_HOURS}}" + (
        "" if value.endswith(".") else "."
    )


def _reach(profile: Profile, channels: Sequence[str]) -> str:
    """`by live chat at …, by email at … or by phone at …`, of the channels `profile` fills."""
    return listing([CHANNELS[name] for name in channels if profile.filled(name)], "or")
