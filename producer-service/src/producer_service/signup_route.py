"""POST /v1/signups as a plain ASGI app: the one route on the request path of every signup.

The other routes are Starlette's (app.py). This one is served before Starlette's router and middleware stack, which
cost about a fifth of a signup's CPU (docs/performance.md), and does itself what they did for it: the correlation id
in and out (`x-request-id`), the request duration metric, the `signups` counter, and Starlette's answer to a failure
(500, "Internal Server Error", the exception re-raised for the server to log).

Invariants:
- the contract is the one openapi.json states and the tests check: the same checks in the same order (media type,
  body size, UTF-8, JSON, Idempotency-Key and fields, then the publish), the same status codes, bodies and headers;
- a 202 is sent only after the broker confirmed the event; its headers are built from constants and the event id
  and request id, both ASCII by construction;
- every request that reaches here is timed once, whatever it ends with; it is counted once by outcome when it got
  an answer that is one (202 accepted, 4xx invalid, 503 unavailable): a 500 (a bug) or a client gone before its
  body was read (timed as 4xx) is not a signup outcome.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from . import logs
from .config import Settings
from .events import DuplicateKey, FieldError, InvalidSignup, UserSignedUp, parse_signup, refuse_duplicate_keys
from .metrics import STATUS_CLASSES, ProducerMetrics, SignupOutcome
from .problems import REQUEST_ID_HEADER, header_token, problem, request_id_of
from .publisher import EventPublisher, PublishFailed
from .status import DeliveryStatus

log = logging.getLogger("producer_service.api")

PATH = "/v1/signups"
_REQUEST_ID = REQUEST_ID_HEADER.encode("ascii")
_CONTENT_TYPE, _CONTENT_LENGTH, _IDEMPOTENCY_KEY = b"content-type", b"content-length", b"idempotency-key"
_JSON = (b"content-type", b"application/json")
_ACCEPTED_BODY = b'{"event_id":"%s"}'  # what JSONResponse({"event_id": id}) renders
# Built once: json.loads with a hook builds a new decoder (and its scanner) for every body.
_decode_json = json.JSONDecoder(object_pairs_hook=refuse_duplicate_keys).decode


def json_body(text: str) -> object:
    """json.loads(text, object_pairs_hook=refuse_duplicate_keys), on the decoder built once."""
    if text.startswith("\ufeff"):  # as json.loads says it
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _decode_json(text)


class _Disconnected(Exception):
    """The client went away before its body was read: nobody is left to answer."""


class SignupRoute:
    """The ASGI app of POST /v1/signups."""

    def __init__(self, settings: Settings, publisher: EventPublisher, metrics: ProducerMetrics,
                 status: DeliveryStatus | None = None) -> None:
        self.settings = settings
        self.publisher = publisher
        self.status = status
        self._secret = settings.idempotency_secret.value.encode() if settings.idempotency_secret else None
        self._signups = {outcome: metrics.signups.labels(outcome.value) for outcome in SignupOutcome}
        self._durations = {cls: metrics.http_duration.labels(PATH, "POST", cls) for cls in STATUS_CLASSES}
        self._retry_after = {"Retry-After": str(settings.retry_after_seconds)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key, value)  # the first of a repeated header, as Starlette's Headers.get
        request_id = request_id_of(headers.get(_REQUEST_ID))
        token = logs.correlation_id.set(request_id)
        status = 500
        try:
            status = await self._handle(headers, receive, send, request_id)
        except _Disconnected:
            status = 499  # timed as a 4xx, not a signup outcome: nothing was published, nobody is answered
        except Exception:
            with contextlib.suppress(Exception):  # unless the failure was the client's connection itself
                await PlainTextResponse("Internal Server Error", status_code=500,
                                        headers={REQUEST_ID_HEADER: request_id})(scope, receive, send)
            raise
        finally:
            if status == 202:
                self._signups[SignupOutcome.ACCEPTED].inc()
            elif status == 503:
                self._signups[SignupOutcome.UNAVAILABLE].inc()
            elif 400 <= status < 499:
                self._signups[SignupOutcome.INVALID].inc()
            self._durations[f"{status // 100}xx"].observe(time.perf_counter() - started)
            logs.correlation_id.reset(token)

    async def _answer(self, send: Send, response: Response, request_id: str) -> int:
        response.headers[REQUEST_ID_HEADER] = request_id
        await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
        return response.status_code

    async def _read_body(self, headers: Mapping[bytes, bytes], receive: Receive) -> bytes | None:
        """The body, or None when it is larger than MAX_BODY_BYTES (declared or sent)."""
        limit = self.settings.max_body_bytes
        declared = headers.get(_CONTENT_LENGTH)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _handle(self, headers: Mapping[bytes, bytes], receive: Receive, send: Send, request_id: str) -> int:
        media_type, _, params = headers.get(_CONTENT_TYPE, b"").decode("latin-1").partition(";")
        charset = params.strip().lower()
        if media_type.strip().lower() != "application/json" or charset not in ("", "charset=utf-8", 'charset="utf-8"'):
            return await self._answer(send, problem(
                415, "unsupported_media_type", "send the body as application/json (UTF-8)",
                [FieldError("Content-Type", "unsupported_media_type", "must be application/json")]), request_id)
        body = await self._read_body(headers, receive)
        if body is None:
            limit = self.settings.max_body_bytes
            return await self._answer(send, problem(413, "body_too_large", f"the body must be at most {limit} bytes"),
                                      request_id)
        payload = self._payload(body)
        if isinstance(payload, Response):
            return await self._answer(send, payload, request_id)
        raw_key = headers.get(_IDEMPOTENCY_KEY)
        idempotency_key = raw_key.decode("latin-1") if raw_key is not None else None
        key_errors = []
        if idempotency_key is not None and header_token(idempotency_key, 255) is None:
            key_errors.append(FieldError("Idempotency-Key", "invalid_header",
                                         "must be 1-255 printable ASCII characters without spaces"))
        try:
            signup = parse_signup(payload, self.settings.locales)
        except InvalidSignup as exc:
            return await self._answer(send, problem(422, "validation_failed", "the signup is invalid",
                                                    [*exc.errors, *key_errors]), request_id)
        if key_errors:
            return await self._answer(send, problem(422, "validation_failed", "the signup is invalid", key_errors),
                                      request_id)
        event = UserSignedUp.new(signup, idempotency_key, self._secret)
        try:
            await self.publisher.publish(event, request_id)
        except PublishFailed as exc:
            log.warning("signup not accepted", extra={"event_id": event.event_id, "reason": exc.reason.value})
            return await self._answer(send, problem(
                503, "broker_unavailable", f"the event could not be stored ({exc.reason.value}); retry later",
                headers=self._retry_after), request_id)
        log.info("signup accepted", extra={"event_id": event.event_id, "locale": signup.locale})
        if self.status is not None:
            self.status.queued(event.event_id, signup.locale)
        accepted = _ACCEPTED_BODY % event.event_id.encode("ascii")
        await send({"type": "http.response.start", "status": 202, "headers": [
            (b"content-length", b"%d" % len(accepted)), _JSON, (_REQUEST_ID, request_id.encode("ascii"))]})
        await send({"type": "http.response.body", "body": accepted})
        return 202

    @staticmethod
    def _payload(body: bytes) -> Any:
        """The decoded JSON, or the 400 that says why it is not."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return problem(400, "invalid_encoding", "the body is not valid UTF-8",
                           [FieldError("body", "invalid_encoding", f"invalid UTF-8 at byte {exc.start}")])
        try:
            return json_body(text)
        except DuplicateKey as exc:
            return problem(400, "invalid_json", f"the body names {exc.key[:100]!r} twice",
                           [FieldError("body", "duplicate_key", str(exc))])
        except ValueError as exc:
            return problem(400, "invalid_json", "the body is not valid JSON",
                           [FieldError("body", "invalid_json", str(exc))])
        except RecursionError:  # e.g. [[[[...]]]] a few thousand deep: fits in MAX_BODY_BYTES, too deep to decode
            return problem(400, "invalid_json", "the body is nested too deeply",
                           [FieldError("body", "invalid_json", "JSON nested too deeply")])
