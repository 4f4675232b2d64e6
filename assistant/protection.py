"""API keys, per-client rate limits and CORS, all off unless configured."""

from __future__ import annotations

import logging
import math
import time

from flask import Flask, g, jsonify, request
from flask_cors import CORS
from flask_limiter import Limiter, RateLimitExceeded
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from werkzeug.middleware.proxy_fix import ProxyFix

from assistant.config import Settings
from assistant.keys import API_KEY_HEADER, PUBLISHABLE, Caller, given_key, identify

log = logging.getLogger(__name__)

# Probes answer without a key: load balancers and orchestrators carry none. So does the
# widget's script: a page loads it with a <script> tag, which sends no header; its own
# requests then carry the page's publishable key.
OPEN_ENDPOINTS = frozenset(
    {"monitoring.health", "monitoring.live", "monitoring.ready", "widget.widget_js"}
)
# All a publishable key, the kind a web page shows to anyone, may do.
PUBLISHABLE_ENDPOINTS = frozenset(
    {"questions.question", "questions.question_stream", "feedback.feedback"}
)


def _refusal(status: int, code: str, message: str, **headers: str):
    return jsonify({"error": {"code": code, "message": message}}), status, headers


class FailedKeyLimit:
    """Requests refused for a missing or wrong key, counted per client address in the rate
    limits' storage: past `AUTH_FAILURE_LIMIT` the address gets 429 and its keys are not even
    compared, so guessing keys costs a window per few tries."""

    def __init__(self, settings: Settings):
        self.limit = parse(settings.auth_failure_limit) if settings.auth_failure_limit else None
        self.prefix = settings.rate_limit_prefix
        self.window = FixedWindowRateLimiter(storage_from_string(settings.rate_limit_storage_uri))

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None while it has tries left."""
        if self.limit is None:
            return None
        try:
            if self.window.test(self.limit, self.prefix, "failed-key", address):
                return None
            reset, _ = self.window.get_window_stats(self.limit, self.prefix, "failed-key", address)
        except Exception as exc:
            # As for the rate limits: a storage that is down must not take the API with it.
            log.warning("failed-key limit storage unavailable: %s", type(exc).__name__)
            return None
        return max(1, math.ceil(reset - time.time()))

    def count(self, address: str) -> None:
        """Count one request refused for its key from `address`."""
        if self.limit is None:
            return
        try:
            self.window.hit(self.limit, self.prefix, "failed-key", address)
        except Exception as exc:  # see retry_after
            log.warning("failed-key limit storage unavailable: %s", type(exc).__name__)


def _client_key() -> str:
    """A key's own bucket (its fingerprint: limiter storage is no place for secrets), else the
    client's address."""
    caller: Caller | None = g.get("caller")
    if caller:
        return "key:" + caller.owner[:16]
    return "ip:" + (request.remote_addr or "unknown")


def require_keys(app: Flask, settings: Settings) -> None:
    """With keys configured, every route but the probes needs one: a secret key any route, a
    publishable key only its own questions and votes, and only from a `CORS_ORIGINS` page."""
    overlap = set(settings.api_keys) & set(settings.publishable_keys)
    if overlap:
        raise ValueError("a key is listed in both API_KEYS and PUBLISHABLE_KEYS")
    if settings.publishable_keys and not settings.cors_origins:
        log.warning("PUBLISHABLE_KEYS is set without CORS_ORIGINS: every use of one is refused")
    failures = FailedKeyLimit(settings)

    @app.before_request
    def require_api_key():
        # A CORS preflight carries no credentials, by the standard.
        if request.endpoint in OPEN_ENDPOINTS or request.method == "OPTIONS":
            return None
        address = request.remote_addr or "unknown"
        wait = failures.retry_after(address)
        if wait is not None:
            return _refusal(
                429,
                "rate_limited",
                "too many requests without a valid API key from this address",
                **{"Retry-After": str(wait)},
            )
        caller = identify(given_key(), settings)
        if caller is None:
            failures.count(address)
            return _refusal(
                401, "unauthorized", f"send a valid API key in the {API_KEY_HEADER} header"
            )
        if caller.kind == PUBLISHABLE:
            if request.endpoint not in PUBLISHABLE_ENDPOINTS:
                return _refusal(
                    403,
                    "forbidden",
                    "a publishable key may only ask questions and give feedback",
                )
            if request.headers.get("Origin") not in settings.cors_origins:
                return _refusal(
                    403, "forbidden", "a publishable key is only accepted from CORS_ORIGINS"
                )
        g.caller = caller
        return None


def protect(app: Flask, settings: Settings) -> None:
    """Keys (when configured), the rate limits and CORS, on an app whose routes are in place."""
    if settings.trusted_proxy_hops:
        # Behind a proxy every client has the proxy's address: the limits per address would
        # put them all in one bucket, and one guesser would lock everyone out.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_hops)
    if settings.keys_required:
        require_keys(app, settings)
    limiter = Limiter(
        _client_key,
        app=app,
        default_limits=[settings.rate_limit] if settings.rate_limit else [],
        enabled=bool(settings.rate_limit or settings.stats_rate_limit),
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
    # Load balancers and orchestrators poll them; throttling them would fake an outage.
    for probe in ("health", "live", "ready", "metrics"):
        limiter.exempt(app.view_functions[f"monitoring.{probe}"])
    if settings.stats_rate_limit:
        # In place of RATE_LIMIT: a few clients polling it must not starve the questions.
        stats = app.view_functions["monitoring.stats"]
        app.view_functions["monitoring.stats"] = limiter.limit(settings.stats_rate_limit)(stats)

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc: RateLimitExceeded):
        return _refusal(429, "rate_limited", f"rate limit exceeded: {exc.description}")

    if settings.cors_origins:
        CORS(
            app,
            origins=list(settings.cors_origins),
            allow_headers=["Content-Type", API_KEY_HEADER],
        )
