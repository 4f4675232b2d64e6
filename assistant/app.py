"""The HTTP API: `create_app(settings)` builds everything once per process, registers the
route blueprints (`assistant.routes`) and answers every error in one JSON format."""

from __future__ import annotations

import logging

import psycopg
from flask import Flask, jsonify, redirect
from spectree import SecurityScheme, SpecTree
from spectree.models import SecuritySchemeData
from werkzeug.exceptions import HTTPException

from assistant import __version__
from assistant.api_models import ErrorResponse
from assistant.config import MAX_BODY_BYTES, Settings
from assistant.db import Database, DatabaseUnavailable, open_database
from assistant.docs_pages import confine, page_templates
from assistant.handoff import build_webhook
from assistant.jobs import JobRunner
from assistant.judge import build_judge
from assistant.keys import API_KEY_HEADER
from assistant.metrics import instrument
from assistant.privacy import Masker, mask_logs
from assistant.protection import protect
from assistant.rag import Assistant, build_assistant
from assistant.routes import feedback, monitoring, questions
from assistant.routes.requests import ApiError, error
from assistant.routes.services import Services, responses
from assistant.spool import UNAVAILABLE, Flusher, Spool, SpoolUnavailable
from assistant.widget import blueprint as widget_blueprint

log = logging.getLogger(__name__)


def _api_spec(settings: Settings) -> SpecTree:
    """The OpenAPI document, generated from the models in api_models.py.

    Validation stays with `routes.requests.validate` (one error format for every 4xx), so
    spectree only documents; `annotations=False` because the views read their bodies
    themselves.
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


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return error(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        body, status = error(exc.code or 500, code, exc.description or exc.name)
        # The exception's own headers (a 405's Allow) stay; its HTML content type does not.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return body, status, headers

    @app.errorhandler(DatabaseUnavailable)
    @app.errorhandler(psycopg.OperationalError)
    def database_error(exc: Exception):
        log.error("database unavailable: %s", type(exc).__name__)
        return error(503, "database_unavailable", "the database is unavailable; retry shortly")

    @app.errorhandler(SpoolUnavailable)
    def storage_error(exc: Exception):
        log.error("database unavailable and %s", exc)
        return error(503, "storage_unavailable", "the request could not be stored; retry shortly")

    @app.errorhandler(psycopg.DataError)
    def unstorable(exc: Exception):
        return error(400, "invalid_request", "the request holds values that cannot be stored")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return error(500, "internal_error", "an unexpected error occurred")


def create_app(
    settings: Settings | None = None,
    *,
    assistant: Assistant | None = None,
    database: Database | None = None,
) -> Flask:
    """The Flask app over `settings` (default: from the environment). `assistant` and
    `database` replace the configured ones (tests). Starts without a database: answers are
    spooled, and the first query that reaches it migrates it."""
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
    spec = _api_spec(settings)
    services = Services(settings, assistant, database, spool, jobs, mask, spec)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["assistant"] = assistant
    app.extensions["database"] = database
    app.extensions["jobs"] = jobs
    app.extensions["spool"] = spool
    app.extensions["flusher"] = flusher

    @app.before_request
    def start_background_threads():
        flusher.ensure_running()
        jobs.start(settings.job_worker_threads)

    _register_errors(app)
    for area in (questions, feedback, monitoring):
        app.register_blueprint(area.blueprint(services))

    @app.get("/openapi.json")
    def openapi():
        return jsonify(spec.spec)

    # Not strict about the slash: /docs/ looks like the folder the pages live in, and a
    # reader who types it gets the same redirect instead of a 404.
    @app.get("/docs", strict_slashes=False)
    def docs():
        return redirect("/docs/swagger/")

    app.register_blueprint(widget_blueprint)
    # Documented like the API's other routes (a bare route is listed with no responses at
    # all); it needs no key: a <script> tag sends none.
    app.view_functions["widget.widget_js"] = services.document(
        resp=responses((None, "text/javascript: the widget's script (see README, Widget)")),
        tags=["widget"],
    )(app.view_functions["widget.widget_js"])
    instrument(app)
    spec.register(app)
    confine(app)
    protect(app, settings)
    return app
