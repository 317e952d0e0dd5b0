"""The HTTP API: POST /v1/signups (signup_route.py), GET /v1/signups/{event_id} (status.py), health, readiness,
metrics and the OpenAPI description."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import logs, openapi
from .config import Settings
from .metrics import ROUTES, ProducerMetrics
from .problems import REQUEST_ID_HEADER, problem, request_id_of
from .publisher import EventPublisher
from .signup_route import PATH as SIGNUPS
from .signup_route import SignupRoute
from .status import DeliveryStatus, StatusRoute

__all__ = ["REQUEST_ID_HEADER", "ProducerApp", "create_app"]

# The correlation id header, read by RequestContext here (SignupRoute, serving POST /v1/signups itself, reads it too).
_REQUEST_ID_KEY = REQUEST_ID_HEADER.encode("ascii")


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
        raw = next((value for key, value in scope["headers"] if key == _REQUEST_ID_KEY), None)
        request_id = request_id_of(raw)
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
    """The routes besides POST /v1/signups (signup_route.py): health, readiness, metrics, the OpenAPI document."""

    def __init__(self, settings: Settings, publisher: EventPublisher, metrics: ProducerMetrics) -> None:
        self.settings = settings
        self.publisher = publisher
        self.metrics = metrics
        self.openapi_document = openapi.document(settings.locales)

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


class ProducerApp:
    """The ASGI app uvicorn serves: POST /v1/signups straight to SignupRoute, everything else (other methods on that
    path included, and the lifespan) to Starlette behind RequestContext. `state` and `routes` are Starlette's: the
    route table lists the signup route too, so it describes the whole API."""

    def __init__(self, starlette: Starlette, signups: SignupRoute, metrics: ProducerMetrics) -> None:
        self.starlette = starlette
        self.signups = signups
        self.rest = RequestContext(starlette, metrics)

    @property
    def state(self) -> State:
        return self.starlette.state

    @property
    def routes(self) -> list:
        return self.starlette.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == SIGNUPS:
            await self.signups(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> ProducerApp:
    metrics = ProducerMetrics(registry or CollectorRegistry())
    publisher = EventPublisher(settings.amqp_url.value, metrics, publish_timeout=settings.publish_timeout,
                               reconnect_max_delay=settings.reconnect_max_delay, heartbeat=settings.amqp_heartbeat)
    status = None
    if settings.redis_url is not None:
        status = DeliveryStatus(settings, on_write_failure=metrics.status_write_failures.inc)
    api = SignupAPI(settings, publisher, metrics)
    signups = SignupRoute(settings, publisher, metrics, status)

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
            Route(SIGNUPS, signups, methods=["POST"]),  # not reached through ProducerApp: listed for the table
            Route("/v1/signups/{event_id}", StatusRoute(settings, status, problem).lookup, methods=["GET"]),
            Route("/healthz", api.healthz, methods=["GET"]),
            Route("/readyz", api.readyz, methods=["GET"]),
            Route("/metrics", api.metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", api.openapi, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.publisher = publisher
    app.state.metrics = metrics
    return ProducerApp(app, signups, metrics)
