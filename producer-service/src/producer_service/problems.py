"""The API's error answers (a machine-readable body: error, message, field-level detail), the check of
client-supplied ids in headers and the request id taken from one. Shared by the signup route (signup_route.py) and
the Starlette routes (app.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from .events import FieldError
from .ids import random_hex

MAX_HEADER_TOKEN = 128
REQUEST_ID_HEADER = "x-request-id"  # read from the request (when well-formed) and set on every response


def header_token(value: str | None, limit: int = MAX_HEADER_TOKEN) -> str | None:
    """A client-supplied id, if it is printable ASCII without spaces and not too long."""
    if value is None or not 0 < len(value) <= limit or not value.isascii() or not value.isprintable() or " " in value:
        return None
    return value


def request_id_of(raw: bytes | None) -> str:
    """The request's correlation id: the client's x-request-id when it is a well-formed token, else a new one."""
    incoming = header_token(raw.decode("latin-1")) if raw is not None else None
    return incoming or random_hex()


class ProblemResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a rejection may echo what the client sent (an unknown field's
    name), and that can hold a lone surrogate (`{"\\ud800": 1}` is valid JSON) that UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def problem(status: int, error: str, message: str, detail: list[FieldError] | None = None,
            headers: Mapping[str, str] | None = None) -> JSONResponse:
    body: dict = {"error": error, "message": message}
    if detail is not None:
        body["detail"] = [d.as_dict() for d in detail]
    return ProblemResponse(body, status_code=status, headers=headers)
