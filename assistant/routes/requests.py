"""Request bodies read and checked one way for every route, and the one error format
(`{"error": {"code", "message"}}`) every 4xx and 5xx uses."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from flask import Response, jsonify, request
from pydantic import BaseModel, ValidationError

from assistant.config import MAX_BODY_BYTES, MAX_QUESTION_CHARS


class ApiError(Exception):
    """A client's mistake, answered as `status` with `{"error": {"code", "message"}}`."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error(status: int, code: str, message: str) -> tuple[Response, int]:
    """The error body and its status."""
    return jsonify({"error": {"code": code, "message": message}}), status


def json_body() -> dict[str, Any]:
    """The request's JSON object. Raises ApiError: 415 not JSON, 413 a chunked body cut at the
    size limit, 400 malformed or not an object, or a string that PostgreSQL cannot store."""
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
            storable(value, key)
    return data


def storable(text: str, field: str) -> None:
    """PostgreSQL text holds neither NUL nor lone surrogates: refuse them as the client's
    (ApiError 400)."""
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


def validate(model: type[Model], data: dict[str, Any]) -> Model:
    """`data` as a `model`. Raises ApiError: 413 for an over-long question, 400 otherwise,
    naming every field that is wrong."""
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
