"""The HTTP client of the API. Every UI (the CLI chat, Streamlit, Gradio) talks through it, so
every exchange is logged, judged and counted on the dashboard like any other.

It imports nothing from the server side: a UI can run on another machine than the API.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import requests

DEFAULT_URL = "http://localhost:5000"
URL_VARIABLE = "ASSISTANT_URL"
API_KEY_VARIABLE = "ASSISTANT_API_KEY"
CONNECT_TIMEOUT = 5.0
# A cold local model can take a while over its first answer.
READ_TIMEOUT = 120.0


class ApiError(RuntimeError):
    """The API could not be reached or answered with an error.

    `status` is the HTTP status (None when no answer came back) and `code` the API's error code
    (or `unreachable`, `timeout`, `invalid_response` for failures on the way).
    """

    def __init__(self, message: str, *, code: str, status: int | None = None):
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


def default_url() -> str:
    return os.environ.get(URL_VARIABLE) or DEFAULT_URL


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream, per the WHATWG rules the API follows."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)


class AssistantClient:
    def __init__(
        self,
        url: str | None = None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        api_key: str | None = None,
    ):
        self.url = (url or default_url()).rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.http = requests.Session()
        # Needed when the API sets keys; the UIs pick it up from the environment. A secret key:
        # the monitoring page reads /stats, which a publishable key may not.
        api_key = api_key or os.environ.get(API_KEY_VARIABLE)
        if api_key:
            self.http.headers["X-API-Key"] = api_key
        # None until tried: then whether POST /question/stream exists on this API.
        self._streams: bool | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> AssistantClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.http.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.Timeout as exc:
            raise ApiError(
                f"{self.url} did not answer within {self.timeout[1]:.0f} s", code="timeout"
            ) from exc
        except requests.RequestException as exc:
            raise ApiError(
                f"no API at {self.url} ({type(exc).__name__})", code="unreachable"
            ) from exc

    def _json(self, response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise ApiError(
                f"{response.request.path_url} answered HTTP {response.status_code} without JSON",
                code="invalid_response",
                status=response.status_code,
            ) from exc
        if not 200 <= response.status_code < 300:
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict):
                raise ApiError(
                    error.get("message", "error"),
                    code=error.get("code", "error"),
                    status=response.status_code,
                )
            raise ApiError(
                f"{response.request.path_url} answered HTTP {response.status_code}",
                code="http_error",
                status=response.status_code,
            )
        return body

    def question(self, question: str, session_id: str | None = None) -> dict[str, Any]:
        """POST /question: the answer, its sources, intent, confidence and status."""
        return self._json(self._request("POST", "/question", json=_body(question, session_id)))

    def feedback(
        self, conversation_id: str, feedback: int, comment: str | None = None
    ) -> dict[str, Any]:
        """POST /feedback: +1 or -1 on a conversation; the latest vote wins. The body's
        `status` is `saved`, or `queued` (HTTP 202) while the database is away: the vote is
        kept and stored when it is back. Both are success."""
        body: dict[str, Any] = {"conversation_id": conversation_id, "feedback": feedback}
        if comment:
            body["comment"] = comment
        return self._json(self._request("POST", "/feedback", json=body))

    def health(self) -> dict[str, Any]:
        """GET /health: status, provider, model and knowledge base. The body also when the
        API answers 503 (its database is down, yet questions are still answered); ApiError
        only when nothing, or something other than the API, answers."""
        response = self._request("GET", "/health")
        if response.status_code == 503:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and "knowledge_base" in body:
                return body
        return self._json(response)

    def stats(self, since: datetime | None = None) -> dict[str, Any]:
        """GET /stats: the dashboard's figures since `since` (the API's default: 24 hours)."""
        params = {"since": since.isoformat()} if since else None
        return self._json(self._request("GET", "/stats", params=params))

    def stream(self, question: str, session_id: str | None = None) -> Iterator[tuple[str, Any]]:
        """Yield ("delta", text) pieces of the answer, then ("answer", the /question body).
        A ("reset", {"reason": ...}) between them withdraws the text so far: the model failed
        mid-answer and the knowledge base's answer follows in new deltas.

        On an API without POST /question/stream, the whole answer comes as one delta, so a UI
        needs only this one loop.
        """
        if self._streams is not False:
            response = self._request(
                "POST",
                "/question/stream",
                json=_body(question, session_id),
                headers={"Accept": "text/event-stream"},
                stream=True,
            )
            if response.status_code in (404, 405):
                response.close()
                self._streams = False
            else:
                self._streams = True
                with response:
                    yield from self._stream_events(response)
                return
        body = self.question(question, session_id)
        yield "delta", body["answer"]
        yield "answer", body

    def _stream_events(self, response: requests.Response) -> Iterator[tuple[str, Any]]:
        if response.status_code != 200:
            self._json(response)
        # Event streams are UTF-8 by definition; requests would guess Latin-1 for text/*.
        response.encoding = "utf-8"
        lines = (
            line.removesuffix("\r")
            for line in response.iter_lines(decode_unicode=True, delimiter="\n")
        )
        try:
            for event, data in sse_events(lines):
                payload = json.loads(data)
                if event == "delta":
                    yield "delta", payload.get("text", "")
                elif event == "reset":
                    # The text so far is withdrawn; the knowledge base's answer follows.
                    yield "reset", payload
                elif event == "answer":
                    yield "answer", payload
                    return
                elif event == "error":
                    error = payload.get("error") or {}
                    raise ApiError(
                        error.get("message", "the answer failed"),
                        code=error.get("code", "error"),
                        status=response.status_code,
                    )
        except requests.RequestException as exc:
            raise ApiError(
                f"the answer stream from {self.url} broke off ({type(exc).__name__})",
                code="unreachable",
            ) from exc
        except ValueError as exc:
            raise ApiError(
                "the answer stream carried invalid JSON", code="invalid_response"
            ) from exc
        raise ApiError("the answer stream ended without an answer", code="invalid_response")


def _body(question: str, session_id: str | None) -> dict[str, str]:
    body = {"question": question}
    if session_id:
        body["session_id"] = session_id
    return body


def feedback_note(reply: dict[str, Any]) -> str:
    """How a UI words a vote the API took: `saved`, or kept for later while the database is
    away (HTTP 202, status `queued`)."""
    if reply.get("status") == "queued":
        return "saved, and will be stored when the database is back"
    return "saved"


def feedback_thanks(reply: dict[str, Any]) -> str:
    """The thanks a UI shows for a vote the API took (see `feedback_note`)."""
    if reply.get("status") == "queued":
        return "Thanks for your feedback! It will be stored when the database is back."
    return "Thanks for your feedback!"


def answer_facts(body: dict[str, Any]) -> list[str]:
    """What the UIs show under an answer, leaving out what it does not have: `["answered",
    "intent double-charge", "confidence 0.93", "openai:gpt-4o-mini"]`; small talk is only
    `["small_talk"]` (it has no intent), and a reply no model wrote names no model. A
    handoff says why (`handoff (requested_human)`), and a decline names the entry it came
    nearest to, without a confidence: it was not answered from it."""
    status = body["status"]
    facts = [f"{status} ({body['handoff_reason']})" if body.get("handoff_reason") else status]
    if body.get("intent") and status == "out_of_scope":
        facts.append(f"nearest {body['intent']}")
    elif body.get("intent"):
        facts += [f"intent {body['intent']}", f"confidence {body['confidence']:.2f}"]
    if body.get("provider") not in (None, "none"):
        facts.append(f"{body['provider']}:{body.get('model_used') or '-'}")
    return facts
