"""API keys: which kind a request's key is, and the fingerprint that marks what it owns.

A *secret* key (`API_KEYS`) opens every route; a *publishable* key (`PUBLISHABLE_KEYS`), the
kind a web page embeds, only asks questions and votes on its own answers. Rows store a key's
SHA-256, never the key.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

from flask import g, request

from assistant.config import Settings

API_KEY_HEADER = "X-API-Key"
SECRET, PUBLISHABLE = "secret", "publishable"


@dataclass(frozen=True)
class Caller:
    """Who is asking: the kind of key they sent and its fingerprint, the owner of their rows."""

    kind: Literal["secret", "publishable"]
    owner: str


def fingerprint(key: str) -> str:
    """The SHA-256 (hex) of a key. Keys are long random strings, so a plain hash cannot be
    reversed by guessing, and it stays the same across deployments and restarts."""
    return hashlib.sha256(key.encode()).hexdigest()


def given_key() -> str:
    """The key a request carries: in `X-API-Key`, or as a bearer token, the form Prometheus's
    scrape configuration sends (`authorization: {credentials: ...}`)."""
    key = request.headers.get(API_KEY_HEADER)
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def identify(key: str, settings: Settings) -> Caller | None:
    """The caller a key names, or None for a key that is not configured.

    Compared with every configured key in constant time, and without stopping at a match, so
    the time taken hints neither at a near match nor at which list holds the key.
    """
    if not key:
        return None
    given = key.encode()
    secret = [hmac.compare_digest(given, k.encode()) for k in settings.api_keys]
    publishable = [hmac.compare_digest(given, k.encode()) for k in settings.publishable_keys]
    if any(secret):
        return Caller(SECRET, fingerprint(key))
    if any(publishable):
        return Caller(PUBLISHABLE, fingerprint(key))
    return None


def current_owner() -> str | None:
    """The fingerprint of the request's key; None with keys off, when rows have no owner."""
    caller: Caller | None = g.get("caller")
    return caller.owner if caller else None
