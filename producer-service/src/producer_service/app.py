"""The HTTP API: POST /v1/signups, GET /v1/signups/{event_id} (status.py), health, readiness, metrics and the OpenAPI
description."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import logs, openapi
from .config import Settings
from .events import DuplicateKey, FieldError, InvalidSignup, UserSignedUp, parse_signup, refuse_duplicate_keys
from .metrics import ROUTES, ProducerMetrics, SignupOutcome
from .publisher import EventPublisher, PublishFailed
from .status import DeliveryStatus, StatusRoute

log = logging.getLogger("producer_service.api")

MAX_HEADER_TOKEN = 128
REQUEST_ID_HEADER = "x-request-id"  # read from the request (when well-formed) and set on every response
_REQUEST_ID_KEY = REQUEST_ID_HEADER.encode("ascii")
# Built once: json.loads with a hook builds a new decoder (and its scanner) for every body.
_decode_json = json.JSONDecoder(object_pairs_hook=refuse_duplicate_keys).decode


def _json_body(text: str) -> object:
    """json.loads(text, object_pairs_hook=refuse_duplicate_keys), on the decoder built once."""
    if text.startswith("\ufeff"):  # as json.loads says it
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _decode_json(text)


def _header_token(value: str | None, limit: int = MAX_HEADER_TOKEN) -> str | None:
    """A client-supplied id, if it is printable ASCII without spaces and not too long."""
    if value is None or not 0 < len(value) <= limit or not value.isascii() or not value.isprintable() or " " in value:
        return None
    return value


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


class RequestContext:
    """ASGI middleware: correlation id in and out, and the request duration metric by route and status class."""

    def __init__(self, app: ASGIApp, metrics: ProducerMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._durations: dict[tuple[str, str, str], Any] = {}  # the histogram's children, looked up once each

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = None
        for key, value in scope["headers"]:
            if key == _REQUEST_ID_KEY:
                incoming = _header_token(value.decode("latin-1"))
                break
        request_id = incoming or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = logs.correlation_id.set(request_id)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (_REQUEST_ID_KEY, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"
            labels = (route, scope["method"], f"{status // 100}xx")
            duration = self._durations.get(labels)
            if duration is None:
                duration = self._durations[labels] = self.metrics.http_duration.labels(*labels)
            duration.observe(time.perf_counter() - started)
            logs.correlation_id.reset(token)


class SignupAPI:
    def __init__(self, settings: Settings, publisher: EventPublisher, metrics: ProducerMetrics,
                 status: DeliveryStatus | None = None) -> None:
        self.settings = settings
        self.publisher = publisher
        self.metrics = metrics
        self.openapi_document = openapi.document(settings.locales)
        self.status = status
        self._secret = settings.idempotency_secret.value.encode() if settings.idempotency_secret else None
        self._signups = {outcome: metrics.signups.labels(outcome.value) for outcome in SignupOutcome}

    async def _read_body(self, request: Request) -> bytes | Response:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return problem(413, "body_too_large", f"the body must be at most {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return problem(413, "body_too_large", f"the body must be at most {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def create_signup(self, request: Request) -> Response:
        response = await self._handle_signup(request)
        if response.status_code == 202:
            outcome = SignupOutcome.ACCEPTED
        elif response.status_code == 503:
            outcome = SignupOutcome.UNAVAILABLE
        else:
            outcome = SignupOutcome.INVALID
        self._signups[outcome].inc()
        return response

    async def _handle_signup(self, request: Request) -> Response:
        media_type, _, params = request.headers.get("content-type", "").partition(";")
        charset = params.strip().lower()
        if media_type.strip().lower() != "application/json" or charset not in ("", "charset=utf-8", 'charset="utf-8"'):
            return problem(415, "unsupported_media_type", "send the body as application/json (UTF-8)",
                           [FieldError("Content-Type", "unsupported_media_type", "must be application/json")])
        body = await self._read_body(request)
        if isinstance(body, Response):
            return body
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return problem(400, "invalid_encoding", "the body is not valid UTF-8",
                           [FieldError("body", "invalid_encoding", f"invalid UTF-8 at byte {exc.start}")])
        try:
            payload = _json_body(text)
        except DuplicateKey as exc:
            return problem(400, "invalid_json", f"the body names {exc.key[:100]!r} twice",
                           [FieldError("body", "duplicate_key", str(exc))])
        except ValueError as exc:
            return problem(400, "invalid_json", "the body is not valid JSON",
                           [FieldError("body", "invalid_json", str(exc))])
        except RecursionError:  # e.g. [[[[...]]]] a few thousand deep: fits in MAX_BODY_BYTES, too deep to decode
            return problem(400, "invalid_json", "the body is nested too deeply",
                           [FieldError("body", "invalid_json", "JSON nested too deeply")])
        idempotency_key = request.headers.get("idempotency-key")
        key_errors = []
        if idempotency_key is not None and _header_token(idempotency_key, 255) is None:
            key_errors.append(FieldError("Idempotency-Key", "invalid_header",
                                         "must be 1-255 printable ASCII characters without spaces"))
        try:
            signup = parse_signup(payload, self.settings.locales)
        except InvalidSignup as exc:
            return problem(422, "validation_failed", "the signup is invalid", [*exc.errors, *key_errors])
        if key_errors:
            return problem(422, "validation_failed", "the signup is invalid", key_errors)
        event = UserSignedUp.new(signup, idempotency_key, self._secret)
        try:
            await self.publisher.publish(event, request.state.request_id)
        except PublishFailed as exc:
            log.warning("signup not accepted", extra={"event_id": event.event_id, "reason": exc.reason.value})
            retry_after = str(self.settings.retry_after_seconds)
            return problem(503, "broker_unavailable",
                           f"the event could not be stored ({exc.reason.value}); retry later",
                           headers={"Retry-After": retry_after})
        log.info("signup accepted", extra={"event_id": event.event_id, "locale": signup.locale})
        if self.status is not None:
            self.status.queued(event.event_id, signup.locale)
        return JSONResponse({"event_id": event.event_id}, status_code=202)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self.publisher.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not_ready", "reason": "broker connection is down"}, status_code=503,
                            headers={"Retry-After": str(self.settings.retry_after_seconds)})

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        return Response(self.openapi_document, media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return problem(exc.status_code, error, str(exc.detail), headers=exc.headers)


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> Starlette:
    metrics = ProducerMetrics(registry or CollectorRegistry())
    publisher = EventPublisher(settings.amqp_url.value, metrics, publish_timeout=settings.publish_timeout,
                               reconnect_max_delay=settings.reconnect_max_delay, heartbeat=settings.amqp_heartbeat)
    status = None
    if settings.redis_url is not None:
        status = DeliveryStatus(settings, on_write_failure=metrics.status_write_failures.inc)
    api = SignupAPI(settings, publisher, metrics, status)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await publisher.start()
        try:
            yield
        finally:
            await publisher.stop()
            if status is not None:
                await status.close()

    app = Starlette(
        routes=[
            Route("/v1/signups", api.create_signup, methods=["POST"]),
            Route("/v1/signups/{event_id}", StatusRoute(settings, status, problem).lookup, methods=["GET"]),
            Route("/healthz", api.healthz, methods=["GET"]),
            Route("/readyz", api.readyz, methods=["GET"]),
            Route("/metrics", api.metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", api.openapi, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.add_middleware(RequestContext, metrics=metrics)
    app.state.publisher = publisher
    app.state.metrics = metrics
    return app
