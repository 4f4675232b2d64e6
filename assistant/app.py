"""The HTTP API: `create_app(settings)` builds everything once per process; routes stay thin."""

from __future__ import annotations

import json
import logging
import threading
from contextlib import closing
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
from cachetools import TTLCache, cached
from flask import Flask, Response, g, jsonify, redirect, request
from pydantic import BaseModel, ValidationError
from spectree import Response as Documented
from spectree import SecurityScheme, SpecTree
from spectree.models import SecuritySchemeData
from werkzeug.exceptions import HTTPException

from assistant import __version__
from assistant.api_models import (
    AnswerResponse,
    ConversationResponse,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    ProbeResponse,
    QuestionRequest,
    StatsQuery,
    StatsResponse,
)
from assistant.config import MAX_BODY_BYTES, MAX_QUESTION_CHARS, Settings
from assistant.db import Database, DatabaseUnavailable, open_database
from assistant.docs_pages import confine, page_templates
from assistant.handoff import build_webhook
from assistant.jobs import JobRunner
from assistant.judge import build_judge
from assistant.keys import API_KEY_HEADER, PUBLISHABLE, current_owner
from assistant.llm import ProviderError
from assistant.metrics import count_answer, exposition, instrument
from assistant.privacy import Masker, mask_cards, mask_logs
from assistant.protection import protect
from assistant.rag import ABANDONED, Answer, Assistant, Retraction, Turn, build_assistant
from assistant.spool import UNAVAILABLE, Flusher, Spool, SpoolUnavailable
from assistant.widget import blueprint as widget_blueprint

log = logging.getLogger(__name__)

# Seconds old the database's part of GET /health may be. Probes come often (`assistant bench
# api` polls every 100 ms, load balancers every few seconds): a query answered that recently
# counts as the ping, and the job depth is counted once per this long in each worker, rather
# than two queries per probe, which under load waited for CPU behind the answers.
HEALTH_MAX_AGE = 1.0


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def conversation_row(answer: Answer, owner: str | None = None) -> dict[str, Any]:
    """The stored row of an answer; `owner` is the asking key's fingerprint (None, keys off)."""
    row = asdict(answer)
    row["id"] = answer.conversation_id
    row["total_tokens"] = answer.total_tokens
    row["owner"] = owner
    return row


def _sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def _json_body() -> dict[str, Any]:
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = request.get_data(cache=False)
    if request.content_length is None and len(raw) >= MAX_BODY_BYTES:
        # A chunked body has no length to refuse up front, and werkzeug stops reading it at
        # the limit without a word: a body that filled the limit was cut short, not complete.
        raise ApiError(413, "request_entity_too_large", "the body is over the size limit")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers malformed JSON and invalid UTF-8; RecursionError, absurd nesting.
        raise ApiError(400, "invalid_json", "the body is not valid UTF-8 JSON") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    for key, value in data.items():
        if isinstance(value, str):
            _storable(value, key)
    return data


def _storable(text: str, field: str) -> None:
    """PostgreSQL text holds neither NUL nor lone surrogates: refuse them as the client's."""
    if "\x00" in text or not text.isascii() and _has_surrogate(text):
        raise ApiError(
            400, "invalid_request", f"{field}: contains characters that cannot be stored"
        )


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


Model = TypeVar("Model", bound=BaseModel)


def _validate(model: type[Model], data: dict[str, Any]) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] == "string_too_long" and e["loc"] == ("question",) for e in errors):
            raise ApiError(
                413, "question_too_long", f"question: at most {MAX_QUESTION_CHARS} characters"
            ) from exc
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors
        )
        raise ApiError(400, "invalid_request", problems) from exc


def _api_spec(settings: Settings) -> SpecTree:
    """The OpenAPI document, generated from the models in api_models.py.

    Validation stays with `_validate` (one error format for every 4xx), so spectree only
    documents; `annotations=False` because the views read their bodies themselves.
    """
    schemes = [
        SecurityScheme(
            name="ApiKey",
            data=SecuritySchemeData(type="apiKey", name=API_KEY_HEADER, field_in="header"),
        )
    ]
    return SpecTree(
        "flask",
        title="Media Support Assistant API",
        version=__version__,
        path="docs",
        annotations=False,
        validation_error_status=400,
        validation_error_model=ErrorResponse,
        security_schemes=schemes if settings.keys_required else None,
        page_templates=page_templates(),
    )


def _responses(ok: type[BaseModel] | None, *errors: int, **others: Any) -> Documented:
    codes = {f"HTTP_{status}": ErrorResponse for status in errors}
    return Documented(HTTP_200=ok, **codes, **others)


def create_app(
    settings: Settings | None = None,
    *,
    assistant: Assistant | None = None,
    database: Database | None = None,
) -> Flask:
    settings = settings or Settings.from_env()
    assistant = assistant or build_assistant(settings)
    database = database or open_database(settings)
    try:
        database.migrate()
    except UNAVAILABLE as exc:
        # Serve anyway: answers go to the spool, and the first query that reaches the
        # database migrates it (Database.ensure_migrated).
        log.warning("database unavailable at start (%s): serving, spooling", type(exc).__name__)
    # Customers' text is masked on its way in (questions, their history, comments) and out
    # (answers), and in every log record: nothing after this point sees a card number.
    mask = Masker(settings.pii_masking, settings.pii_phone_region)
    mask_logs(mask)
    spool = Spool(settings.spool_dir)
    # Rows a previous run spooled are replayed by the flusher's thread, never before the port
    # is bound or on a request's time.
    flusher = Flusher(spool, database, settings.spool_flush_interval)
    jobs = JobRunner(
        database,
        build_judge(settings),
        handoff=build_webhook(settings, database),
        lease=settings.job_lease,
    )

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    spec = _api_spec(settings)
    # With keys configured every route but the probes takes one (see protection.py); a
    # publishable key is refused (403) where it may not go.
    keyed = {"security": {"ApiKey": []}} if settings.keys_required else {}
    key_errors = (401, 403) if settings.keys_required else ()
    post_errors = (400, *key_errors, 413, 415, 429)
    app.extensions["assistant"] = assistant
    app.extensions["database"] = database
    app.extensions["jobs"] = jobs
    app.extensions["spool"] = spool
    app.extensions["flusher"] = flusher

    @app.before_request
    def start_background_threads():
        flusher.ensure_running()
        jobs.start(settings.job_worker_threads)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return _error(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        body, status = _error(exc.code or 500, code, exc.description or exc.name)
        # The exception's own headers (a 405's Allow) stay; its HTML content type does not.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return body, status, headers

    @app.errorhandler(DatabaseUnavailable)
    @app.errorhandler(psycopg.OperationalError)
    def database_error(exc: Exception):
        log.error("database unavailable: %s", type(exc).__name__)
        return _error(503, "database_unavailable", "the database is unavailable; retry shortly")

    @app.errorhandler(SpoolUnavailable)
    def storage_error(exc: Exception):
        log.error("database unavailable and %s", exc)
        return _error(503, "storage_unavailable", "the request could not be stored; retry shortly")

    @app.errorhandler(psycopg.DataError)
    def unstorable(exc: Exception):
        return _error(400, "invalid_request", "the request holds values that cannot be stored")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return _error(500, "internal_error", "an unexpected error occurred")

    def read_question() -> tuple[str, str | None, list[Turn]]:
        body = _validate(QuestionRequest, _json_body())
        text = mask(body.question.strip())
        if not text:
            raise ApiError(400, "invalid_request", "question: must not be blank")
        history = []
        if body.session_id:
            history = session_history(body.session_id)
        return text, body.session_id, history

    def session_history(session_id: str) -> list[Turn]:
        """The session's earlier turns under the caller's key. A publishable key is shared by
        every visitor of a website, so it may only continue a session the server issued to
        it, never start one under an id of its own choosing."""
        owner = current_owner()
        try:
            # Rows stored before masking (or before PII_MASKING was on) are masked here.
            turns = [
                Turn(mask(q), mask_cards(a)) for q, a in database.session_history(session_id, owner)
            ]
            caller = g.get("caller")
            publishable = caller is not None and caller.kind == PUBLISHABLE
            if not turns and publishable and not database.has_session(session_id, owner):
                raise ApiError(404, "session_not_found", "no such session for this key")
        except UNAVAILABLE as exc:
            # Without its history a follow-up is answered as a fresh question, not refused.
            log.warning("session history unavailable: %s", type(exc).__name__)
            return []
        return turns

    def record(answer: Answer, owner: str | None) -> None:
        """Stored (or spooled) before the reply leaves, with the job that judges it later,
        off the request path. Raises SpoolUnavailable when neither the database nor the spool
        can keep it."""
        count_answer(
            answer.status,
            answer.model_used,
            answer.prompt_tokens,
            answer.completion_tokens,
            answer.cost_usd,
            answer.error if answer.fallback else None,
        )
        # A model cannot have seen the customer's card, but may invent one. Answers keep their
        # emails and phones: those are the business's own contact details.
        answer.answer = mask_cards(answer.answer)
        row = conversation_row(answer, owner)
        if answer.status == "handoff" and settings.handoff_webhook_url:
            row["handoff_delivery"] = "queued"
        if answer.status == ABANDONED:
            row["relevance"] = "UNJUDGED"
            row["relevance_explanation"] = "the customer left before the answer was complete"
        try:
            database.save_conversation(row)
            # Stored without the spool: whatever stopped it writing no longer loses rows.
            spool.failing = None
        except UNAVAILABLE as exc:
            log.warning("database unavailable, conversation spooled: %s", type(exc).__name__)
            # Replayed, it is saved with its judge job like any other row.
            spool.add_conversation(row)

    @app.post("/question")
    @spec.validate(
        json=QuestionRequest,
        resp=_responses(AnswerResponse, *post_errors),
        tags=["questions"],
        skip_validation=True,
        **keyed,
    )
    def question():
        """Answer a customer's question from the knowledge base, or decline or hand off."""
        answer = assistant.answer(*read_question())
        record(answer, current_owner())
        return jsonify(answer.public())

    @app.post("/question/stream")
    @spec.validate(
        json=QuestionRequest,
        resp=_responses(
            (None, "text/event-stream: `delta` events, then one `answer`"), *post_errors
        ),
        tags=["questions"],
        skip_validation=True,
        **keyed,
    )
    def question_stream():
        """The same answer as server-sent events, so a UI can show it as it is written."""
        text, session_id, history = read_question()
        # The events are written after the request's context is gone.
        owner = current_owner()

        def keep_abandoned(answer: Answer) -> None:
            try:
                record(answer, owner)
            except SpoolUnavailable as exc:
                log.error("an abandoned stream's row is lost: %s", exc)

        def failed(code: str, message: str) -> str:
            return _sse("error", {"error": {"code": code, "message": message}})

        def events():
            # Closed explicitly when the client goes away: the model's request ends with it.
            with closing(assistant.stream(text, session_id, history, keep_abandoned)) as parts:
                try:
                    for part in parts:
                        if isinstance(part, Answer):
                            record(part, owner)
                            yield _sse("answer", part.public())
                        elif isinstance(part, Retraction):
                            yield _sse("reset", {"reason": part.reason})
                        else:
                            yield _sse("delta", {"text": part})
                except SpoolUnavailable as exc:
                    log.error("database unavailable and %s", exc)
                    yield failed("storage_unavailable", "the answer could not be stored")
                except (ProviderError, DatabaseUnavailable, psycopg.OperationalError) as exc:
                    log.error("stream failed: %s", type(exc).__name__)
                    yield failed("stream_failed", "the answer could not be completed")
                except Exception:
                    # Past the 200 no error status can be sent: the stream still ends in an event.
                    log.exception("stream failed")
                    yield failed("internal_error", "an unexpected error occurred")

        # A (body, status, headers) tuple: spectree passes it through without reading the
        # generator, which a Response object would have it drain before the first byte.
        headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
        return events(), 200, headers

    @app.post("/feedback")
    @spec.validate(
        json=FeedbackRequest,
        resp=_responses(FeedbackResponse, *post_errors, 404, HTTP_202=FeedbackResponse),
        tags=["feedback"],
        skip_validation=True,
        **keyed,
    )
    def feedback():
        """Record a thumbs up (1) or down (-1); a repeat vote replaces the earlier one."""
        body = _validate(FeedbackRequest, _json_body())
        reply = {"conversation_id": body.conversation_id, "feedback": body.feedback}
        comment = None if body.comment is None else mask(body.comment)
        owner = current_owner()
        try:
            saved = database.save_feedback(
                body.conversation_id, body.feedback, comment, owner=owner
            )
        except UNAVAILABLE as exc:
            # Unknown ids cannot be told apart while the database is away; replay drops them.
            log.warning("database unavailable, feedback spooled: %s", type(exc).__name__)
            saved = None
        if saved:
            return jsonify({**reply, "status": "saved"})
        if saved is False and not spool.has_conversation(body.conversation_id, owner):
            # Another key's conversation is not told apart from an unknown one.
            raise ApiError(
                404, "conversation_not_found", f"no conversation {body.conversation_id!r}"
            )
        spool.add_feedback(body.conversation_id, body.feedback, comment, owner)
        return jsonify({**reply, "status": "queued"}), 202

    @app.get("/conversations/<conversation_id>")
    @spec.validate(
        resp=_responses(ConversationResponse, 400, *key_errors, 404, 429, 503),
        tags=["conversations"],
        skip_validation=True,
        **keyed,
    )
    def conversation(conversation_id: str):
        """One stored conversation with its judged relevance and feedback; only the key that
        asked it can read it."""
        _storable(conversation_id, "conversation_id")
        row = database.get_conversation(conversation_id, current_owner())
        if row is None:
            raise ApiError(404, "conversation_not_found", f"no conversation {conversation_id!r}")
        return jsonify(ConversationResponse.model_validate(row).model_dump(mode="json"))

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

    @app.get("/stats")
    @spec.validate(
        query=StatsQuery,
        # 414: gunicorn refuses a request line over 4 KiB (many `since` values) before the app.
        resp=_responses(StatsResponse, 400, *key_errors, 429, 503, HTTP_414=None),
        tags=["monitoring"],
        skip_validation=True,
        **keyed,
    )
    def stats():
        """The dashboard's figures (volume, latency, cost, relevance, feedback) since a time;
        the same figures for `STATS_CACHE_SECONDS` (and for starts that close together)."""
        since = _validate(StatsQuery, request.args.to_dict()).since
        if since is None:
            since = datetime.now(UTC) - timedelta(hours=24)
        # A time without a zone is read as UTC, the zone timestamps are compared in.
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        return Response(stats_body(since), mimetype="application/json")

    def job_depth() -> int | None:
        try:
            return database.job_counts()["queued"]
        except UNAVAILABLE:
            return None

    recent_job_depth = cached(
        TTLCache(maxsize=1, ttl=HEALTH_MAX_AGE), key=lambda: (), lock=threading.Lock()
    )(job_depth)

    @app.get("/health")
    @spec.validate(
        resp=_responses(HealthResponse, HTTP_503=HealthResponse),
        tags=["monitoring"],
        skip_validation=True,
    )
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

    @app.get("/health/live")
    @spec.validate(resp=_responses(ProbeResponse), tags=["monitoring"], skip_validation=True)
    def live():
        """Liveness: the process is up and serving requests (for restarts)."""
        return jsonify({"status": "alive"})

    @app.get("/health/ready")
    @spec.validate(
        resp=_responses(ProbeResponse, HTTP_503=ProbeResponse),
        tags=["monitoring"],
        skip_validation=True,
    )
    def ready():
        """Readiness: it can answer and keep what it answers (for load balancers). Ready with
        the database down while the spool can write; not ready when neither can."""
        if spool.failing and not database.ping():
            return jsonify({"status": "not_ready"}), 503
        return jsonify({"status": "ready"})

    @app.get("/openapi.json")
    def openapi():
        return jsonify(spec.spec)

    @app.get("/docs")
    def docs():
        return redirect("/docs/swagger/")

    @app.get("/metrics")
    @spec.validate(
        resp=_responses(
            (None, "text/plain: Prometheus text format (see README, Monitoring)"), *key_errors
        ),
        tags=["monitoring"],
        skip_validation=True,
        **keyed,
    )
    def metrics():
        """Prometheus metrics: request latency, answers, tokens, cost, model errors, work
        waiting; added up across the server's workers. With keys on, a secret key (Prometheus
        can send it as a bearer token)."""
        return exposition(spool.pending(), job_depth())

    app.register_blueprint(widget_blueprint)
    # Documented like the API's other routes (a bare route is listed with no responses at
    # all); it needs no key: a <script> tag sends none.
    app.view_functions["widget.widget_js"] = spec.validate(
        resp=_responses((None, "text/javascript: the widget's script (see README, Widget)")),
        tags=["widget"],
        skip_validation=True,
    )(app.view_functions["widget.widget_js"])
    instrument(app)
    spec.register(app)
    confine(app)
    protect(app, settings)
    return app
