"""What operators and load balancers read: /stats (the dashboard's figures), /health (its
body says what is degraded), /health/live and /health/ready (the probes), /metrics
(Prometheus)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from cachetools import TTLCache, cached
from flask import Blueprint, Response, jsonify, request

from assistant.api_models import HealthResponse, ProbeResponse, StatsQuery, StatsResponse
from assistant.metrics import exposition
from assistant.routes.requests import validate
from assistant.routes.services import Services, responses
from assistant.spool import UNAVAILABLE

# Seconds old the database's part of GET /health may be. Probes come often (`assistant bench
# api` polls every 100 ms, load balancers every few seconds): a query answered that recently
# counts as the ping, and the job depth is counted once per this long in each worker, rather
# than two queries per probe, which under load waited for CPU behind the answers.
HEALTH_MAX_AGE = 1.0


def blueprint(services: Services) -> Blueprint:
    """The monitoring routes over `services`."""
    settings, assistant, database, spool = (
        services.settings,
        services.assistant,
        services.database,
        services.spool,
    )
    routes = Blueprint("monitoring", __name__)

    def stats_body(since: datetime) -> str:
        return StatsResponse.model_validate(database.stats(since)).model_dump_json()

    if settings.stats_cache_seconds > 0:
        # The figures scan the whole window: clients polling at once share one computation
        # per few seconds (the condition makes the others wait for it, not run it too).
        # Dashboards ask "since 24 hours ago", a new time at every poll: starts within the
        # same few seconds share an entry.
        computing = threading.Condition()
        stats_body = cached(
            TTLCache(maxsize=64, ttl=settings.stats_cache_seconds),
            key=lambda since: int(since.timestamp() // settings.stats_cache_seconds),
            lock=computing,
            condition=computing,
        )(stats_body)

    def job_depth() -> int | None:
        try:
            return database.job_counts()["queued"]
        except UNAVAILABLE:
            return None

    recent_job_depth = cached(
        TTLCache(maxsize=1, ttl=HEALTH_MAX_AGE), key=lambda: (), lock=threading.Lock()
    )(job_depth)

    @routes.get("/stats")
    @services.document(
        query=StatsQuery,
        # 414: gunicorn refuses a request line over 4 KiB (many `since` values) before the app.
        resp=responses(StatsResponse, 400, *services.key_errors, 429, 503, HTTP_414=None),
        tags=["monitoring"],
        keyed=True,
    )
    def stats():
        """The dashboard's figures (volume, latency, cost, relevance, feedback) since a time;
        the same figures for `STATS_CACHE_SECONDS` (and for starts that close together)."""
        since = validate(StatsQuery, request.args.to_dict()).since
        if since is None:
            since = datetime.now(UTC) - timedelta(hours=24)
        # A time without a zone is read as UTC, the zone timestamps are compared in.
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        return Response(stats_body(since), mimetype="application/json")

    @routes.get("/health")
    @services.document(resp=responses(HealthResponse, HTTP_503=HealthResponse), tags=["monitoring"])
    def health():
        """Liveness for load balancers: `degraded` while rows wait in the spool. The spool is
        counted at each call; the database's state and the job depth may be up to a second
        old (a query answered within the second counts as the database being up)."""
        database_ok = database.ping(fresh_for=HEALTH_MAX_AGE)
        pending = spool.pending()
        provider_status = assistant.provider_status
        healthy = (
            database_ok and not pending and not spool.failing and provider_status != "degraded"
        )
        body = {
            "status": "ok" if healthy else "degraded",
            "database": "ok" if database_ok else "down",
            "spool": pending,
            "spool_status": "failing" if spool.failing else "ok",
            "jobs": recent_job_depth() if database_ok else None,
            "provider": assistant.provider.name,
            "provider_status": provider_status,
            "model": assistant.provider.model,
            "knowledge_base": {
                "documents": len(assistant.retriever.documents),
                "source": assistant.knowledge_source,
            },
        }
        return jsonify(body), 200 if database_ok else 503

    @routes.get("/health/live")
    @services.document(resp=responses(ProbeResponse), tags=["monitoring"])
    def live():
        """Liveness: the process is up and serving requests (for restarts)."""
        return jsonify({"status": "alive"})

    @routes.get("/health/ready")
    @services.document(resp=responses(ProbeResponse, HTTP_503=ProbeResponse), tags=["monitoring"])
    def ready():
        """Readiness: it can answer and keep what it answers (for load balancers). Ready with
        the database down while the spool can write; not ready when neither can."""
        if spool.failing and not database.ping():
            return jsonify({"status": "not_ready"}), 503
        return jsonify({"status": "ready"})

    @routes.get("/metrics")
    @services.document(
        resp=responses(
            (None, "text/plain: Prometheus text format (see README, Monitoring)"),
            *services.key_errors,
        ),
        tags=["monitoring"],
        keyed=True,
    )
    def metrics():
        """Prometheus metrics: request latency, answers, tokens, cost, model errors, work
        waiting; added up across the server's workers. With keys on, a secret key (Prometheus
        can send it as a bearer token)."""
        return exposition(spool.pending(), job_depth())

    return routes
