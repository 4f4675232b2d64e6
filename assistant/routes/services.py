"""What the routes share, built once per process by `create_app`, and how they are documented
in the OpenAPI spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from spectree import Response as Documented
from spectree import SpecTree

from assistant.api_models import ErrorResponse
from assistant.config import Settings
from assistant.db import Database
from assistant.jobs import JobRunner
from assistant.privacy import Masker
from assistant.rag import Assistant
from assistant.spool import Spool


@dataclass(frozen=True)
class Services:
    """The process's assistant, database, spool and job runner; `mask` masks customers' text
    on its way in; `spec` documents every route (it validates nothing: `requests.validate`
    does, so every 4xx has one format)."""

    settings: Settings
    assistant: Assistant
    database: Database
    spool: Spool
    jobs: JobRunner
    mask: Masker
    spec: SpecTree

    @property
    def keyed(self) -> dict[str, Any]:
        """The security requirement of a route that takes a key, when keys are on."""
        return {"security": {"ApiKey": []}} if self.settings.keys_required else {}

    @property
    def key_errors(self) -> tuple[int, ...]:
        """A keyed route's refusals: 401 no or a wrong key, 403 a publishable key where it
        may not go."""
        return (401, 403) if self.settings.keys_required else ()

    @property
    def post_errors(self) -> tuple[int, ...]:
        """The statuses a POST with a JSON body can be refused with."""
        return (400, *self.key_errors, 413, 415, 429)

    def document(self, *, resp: Documented, tags: list[str], keyed: bool = False, **options):
        """spectree's decorator for a route: documented, never validated by spectree."""
        security = self.keyed if keyed else {}
        return self.spec.validate(resp=resp, tags=tags, skip_validation=True, **security, **options)


def responses(ok: type[BaseModel] | tuple | None, *errors: int, **others: Any) -> Documented:
    """The documented responses: `ok` for 200, ErrorResponse for each of `errors`."""
    codes = {f"HTTP_{status}": ErrorResponse for status in errors}
    return Documented(HTTP_200=ok, **codes, **others)
