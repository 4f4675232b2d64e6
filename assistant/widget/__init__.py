"""The website chat widget: `GET /widget.js`, one plain-JavaScript file (widget.js beside this
module, no build step) that a page includes with one tag; see the README's Website widget."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

SCRIPT = Path(__file__).with_name("widget.js")

blueprint = Blueprint("widget", __name__)


@blueprint.get("/widget.js")
def widget_js() -> Response:
    """The widget's script. Cached for five minutes: a new release reaches pages soon, and a
    busy site does not fetch it on every page view."""
    response = Response(SCRIPT.read_bytes(), mimetype="text/javascript")
    response.headers["Cache-Control"] = "public, max-age=300"
    # Any page may load it (its requests to the API still need CORS_ORIGINS and a key).
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
