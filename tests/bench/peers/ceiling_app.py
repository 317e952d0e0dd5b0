"""Producer ceiling: Starlette + uvicorn (uvloop, httptools), one route, one aio-pika publish with a publisher
confirm per request (persistent, to the same exchange and routing key as producer-service). No validation, no
metrics, no logging.

    uvicorn ceiling_app:app --loop uvloop --http httptools --port P --no-access-log

Env: BENCH_AMQP_URL; BENCH_EXCHANGE / BENCH_ROUTING_KEY (default signups / user.signed_up). The event id it answers
with travels as the AMQP message_id (no body rewriting), so the end-to-end benchmark can follow each signup.
"""

from __future__ import annotations

import contextlib
import os
import uuid

import aio_pika
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

state: dict = {}


@contextlib.asynccontextmanager
async def lifespan(app):
    connection = await aio_pika.connect(os.environ["BENCH_AMQP_URL"])
    channel = await connection.channel(publisher_confirms=True)
    name = os.environ.get("BENCH_EXCHANGE", "signups")
    state["exchange"] = await channel.get_exchange(name) if name else channel.default_exchange
    state["routing_key"] = os.environ.get("BENCH_ROUTING_KEY", "user.signed_up")
    yield
    await connection.close()


async def signup(request: Request) -> JSONResponse:
    body = await request.body()
    event_id = str(uuid.uuid4())
    await state["exchange"].publish(aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                                     message_id=event_id), state["routing_key"])
    return JSONResponse({"event_id": event_id}, status_code=202)


app = Starlette(routes=[Route("/v1/signups", signup, methods=["POST"])], lifespan=lifespan)
