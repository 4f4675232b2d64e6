"""Masking of personal data before it is stored, logged or sent to a model.

Card numbers (PANs) are masked always: a Luhn-valid run of 13 to 19 digits, written together
or in groups joined by single spaces, dashes or dots (no-break spaces and Unicode dashes too),
keeps only its last four digits. With
`PII_MASKING=on` emails and phone numbers are masked too. A digit run that fails the Luhn check
(an order or ticket number) is left as it is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import phonenumbers

CARD_DIGITS = range(13, 20)
CARD_MASK = "**** **** **** "
EMAIL_MASK = "[email]"
PHONE_MASK = "[phone]"

# Digit groups joined by one separator: "4111 1111 1111 1111", "4111-1111-1111-1111",
# "4111.1111.1111.1111"; no-break and narrow no-break spaces and the Unicode dashes too, which
# word processors and phone keyboards put in for spaces and hyphens.
_DIGIT_RUN = re.compile(r"(?<!\d)\d+(?:[ \u00a0\u202f\-\u2010-\u2014.]\d+)*(?!\d)")
_DIGITS = re.compile(r"\d+")
# No maintained library that finds addresses in free text is lean (Presidio needs spaCy,
# scrubadub scikit-learn): this is the common local@domain.tld shape, which is what customers
# type. Validating an address is not the point; not leaving one in clear is.
_EMAIL = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")


def luhn_valid(digits: str) -> bool:
    """Whether a string of ASCII digits passes the Luhn check, as every card number does."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_spans(run: str) -> Iterator[tuple[int, int]]:
    """The spans of a digit run that hold card numbers: every window of its digit groups with
    13 to 19 Luhn-valid digits, overlapping windows merged. Every window, not only the whole
    run: in "call 0800 123 4111 1111 1111 1111" the card follows phone digits. Merged: of two
    overlapping candidates either may be the card, so both are masked.

    A window joined by dots and anything else is passed over: the dot is also the decimal
    point and the date's separator, so "4.99 9.99 24.99 11.99" or "2024.01.15-2024.01.23" is
    prices or a date range even when its digits pass the Luhn check. A card written with dots
    is dotted throughout; spaces and dashes still mix, as hand-typed cards do."""
    groups = list(_DIGITS.finditer(run))
    spans: list[list[int]] = []
    for first in range(len(groups)):
        digits, joins = "", ""
        for last in range(first, len(groups)):
            digits += groups[last].group()
            if last > first:
                joins += run[groups[last - 1].end()]
            if len(digits) >= CARD_DIGITS.stop or ("." in joins and joins.strip(".")):
                break
            if len(digits) in CARD_DIGITS and luhn_valid(digits):
                start, end = groups[first].start(), groups[last].end()
                if spans and start <= spans[-1][1]:
                    spans[-1][1] = max(spans[-1][1], end)
                else:
                    spans.append([start, end])
    return ((start, end) for start, end in spans)


def _mask_run(match: re.Match[str]) -> str:
    run, pieces, done = match.group(), [], 0
    for start, end in _card_spans(run):
        last4 = "".join(_DIGITS.findall(run[start:end]))[-4:]
        pieces += [run[done:start], CARD_MASK + last4]
        done = end
    return "".join(pieces) + run[done:]


def mask_cards(text: str) -> str:
    """`text` with every Luhn-valid card number replaced by `**** **** **** 1234` (its last
    four digits kept); other digit runs unchanged."""
    return _DIGIT_RUN.sub(_mask_run, text)


@dataclass(frozen=True)
class Masker:
    """What the service masks in text a customer wrote (questions, comments, logs).

    `personal`: emails and phone numbers as well as card numbers (`PII_MASKING=on`).
    `region`: the ISO 3166 country whose national format a phone number without a `+` prefix
    is read in (`PII_PHONE_REGION`); numbers written with `+` are found whatever it is.
    """

    personal: bool = False
    region: str = "US"

    def __call__(self, text: str) -> str:
        """`text` masked; cards first, so their digits are never taken for a phone number."""
        text = mask_cards(text)
        if not self.personal:
            return text
        text = _EMAIL.sub(EMAIL_MASK, text)
        pieces, done = [], 0
        for match in phonenumbers.PhoneNumberMatcher(text, self.region):
            pieces += [text[done : match.start], PHONE_MASK]
            done = match.end
        return "".join(pieces) + text[done:]


_log_masker: Masker | None = None


def mask_logs(masker: Masker) -> None:
    """Mask every log record this process creates, from any logger, for any handler (the
    server's, gunicorn's, a test's): its message is formatted and masked when the record is
    made, and so is the text of its exception. Calling it again changes the masker only."""
    global _log_masker
    if _log_masker is None:
        logging.setLogRecordFactory(_masking_factory(logging.getLogRecordFactory()))
    _log_masker = masker


def _masking_factory(make: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args, **kwargs) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return record  # a broken format call: logging reports it as it always does
        record.msg, record.args = _log_masker(message), None
        if record.exc_info:
            record.exc_text = _log_masker(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = _log_masker(record.stack_info)
        return record

    return factory


def contact_details(text: str, region: str = "US") -> tuple[list[str], list[str]]:
    """The email addresses and phone numbers (E.164, `+15550123`) written in `text`, each once,
    in order of appearance, as the masker finds them: what a handed-off customer left for the
    team to reply to. Card numbers are never taken for phones (they are masked first)."""
    text = mask_cards(text)
    emails = list(dict.fromkeys(match.group() for match in _EMAIL.finditer(text)))
    phones = list(
        dict.fromkeys(
            phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
            for match in phonenumbers.PhoneNumberMatcher(text, region)
        )
    )
    return emails, phones
