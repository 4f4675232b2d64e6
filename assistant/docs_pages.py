"""The /docs pages (Swagger UI, ReDoc, Scalar), whole from this process and contacting no one.

The UIs' scripts and styles come inlined from the `offapi` package (spectree's `offline`
extra). Its own pages leave the UIs' defaults on, and those reach other hosts: Swagger UI sends
the document's address to validator.swagger.io, ReDoc reports telemetry to Redocly and loads
its logo from Redocly's CDN, Scalar loads its fonts from fonts.scalar.com. These pages turn
each off, and a Content-Security-Policy makes the browser refuse whatever is left.
"""

from __future__ import annotations

import functools
from importlib import resources

from flask import Flask, Response, request

# Only this origin; inline scripts and styles because the assets are inlined; data: and blob:
# for the icons and workers the UIs build in the page.
POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; frame-ancestors 'none'"
)
_ICON = (
    "data:image/svg+xml,<svg xmlns=%22http://www.w3.org/2000/svg%22 viewBox=%220 0 100 100%22>"
    "<text y=%221em%22 font-size=%2280%22>📄</text></svg>"
)


def _asset(name: str) -> str:
    text = (resources.files("offapi") / name).read_text(encoding="utf-8")
    # The pages are str.format templates (spectree fills in {spec_url}).
    return text.replace("{", "{{").replace("}", "}}")


def _page(title: str, head: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="{_ICON}"><title>{title}</title>{head}</head>'
        f"<body>{body}</body></html>"
    )


@functools.cache
def page_templates() -> dict[str, str]:
    """spectree's `page_templates`: the three UIs, by the path they are served under (built
    once per process: the assets are megabytes)."""
    swagger = _page(
        "API docs (Swagger UI)",
        f"<style>{_asset('swagger_style.css')}</style>",
        '<div id="swagger-ui"></div>'
        f"<script>{_asset('swagger_bundle.js')}</script>"
        f"<script>{_asset('swagger_preset.js')}</script>"
        "<script>window.onload = () => {{ window.ui = SwaggerUIBundle({{"
        "url: '{spec_url}', dom_id: '#swagger-ui', validatorUrl: null,"
        " presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],"
        ' layout: "StandaloneLayout" }}); }};</script>',
    )
    redoc = _page(
        "API docs (ReDoc)",
        "<style>body {{ margin: 0; padding: 0; }}</style>",
        "<redoc spec-url='{spec_url}' disable-telemetry='true'></redoc>"
        f'<script type="module">{_asset("redoc.js")}</script>',
    )
    scalar = _page(
        "API docs (Scalar)",
        "<style>body {{ margin: 0; }}</style>",
        '<script id="api-reference" data-url="{spec_url}"></script>'
        "<script>document.getElementById('api-reference').dataset.configuration ="
        " JSON.stringify({{ theme: 'purple', withDefaultFonts: false }});</script>"
        f"<script>{_asset('scalar.js')}</script>",
    )
    return {"swagger": swagger, "redoc": redoc, "scalar": scalar}


def confine(app: Flask) -> None:
    """Serve the docs pages under POLICY, so the browser itself refuses any other host."""

    @app.after_request
    def docs_policy(response: Response) -> Response:
        if request.path.startswith("/docs"):
            response.headers["Content-Security-Policy"] = POLICY
        return response
