"""Optional API keys, per-client rate limits and CORS, all off unless configured."""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, jsonify, request
from flask_cors import CORS
from flask_limiter import Limiter, RateLimitExceeded

from assistant.config import Settings

API_KEY_HEADER = "X-API-Key"


def _valid_key(settings: Settings) -> str | None:
    given = request.headers.get(API_KEY_HEADER, "")
    # compare_digest against every key, so the time taken does not hint at a near match.
    matches = [hmac.compare_digest(given.encode(), key.encode()) for key in settings.api_keys]
    return given if given and any(matches) else None


def _client_key(settings: Settings) -> str:
    """A valid key's own bucket (hashed: limiter storage is no place for secrets), else the IP."""
    key = _valid_key(settings)
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return "ip:" + (request.remote_addr or "unknown")


def protect(app: Flask, settings: Settings) -> None:
    @app.before_request
    def require_api_key():
        if settings.api_keys and request.method == "POST" and not _valid_key(settings):
            body = {
                "error": {
                    "code": "unauthorized",
                    "message": f"send a valid API key in the {API_KEY_HEADER} header",
                }
            }
            return jsonify(body), 401
        return None

    limiter = Limiter(
        lambda: _client_key(settings),
        app=app,
        default_limits=[settings.rate_limit] if settings.rate_limit else [],
        enabled=bool(settings.rate_limit),
        headers_enabled=True,
        storage_uri=settings.rate_limit_storage_uri,
        # A storage that is down (Redis) must not take the API with it, nor log a traceback
        # per request: each process says so once and counts in memory meanwhile, checking for
        # the storage again after 1, 2, 4 ... 32 s.
        in_memory_fallback_enabled=True,
        swallow_errors=True,
        key_prefix=settings.rate_limit_prefix,
    )
    app.extensions["rate_limiter"] = limiter
    # Load balancers and orchestrators poll it; throttling them would fake an outage.
    for probe in ("health", "live", "ready", "metrics"):
        limiter.exempt(app.view_functions[probe])

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc: RateLimitExceeded):
        body = {
            "error": {"code": "rate_limited", "message": f"rate limit exceeded: {exc.description}"}
        }
        return jsonify(body), 429

    if settings.cors_origins:
        CORS(
            app,
            origins=list(settings.cors_origins),
            allow_headers=["Content-Type", API_KEY_HEADER],
        )
