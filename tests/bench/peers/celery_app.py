"""The signup endpoint enqueueing a Celery task instead: Starlette + uvicorn (uvloop, httptools), POST /v1/signups
parses the JSON and calls Celery's `send_task` the way users do from an async framework: the synchronous call
in Starlette's thread pool (`run_in_threadpool`, anyio's default 40 threads). Celery publishes with
`confirm_publish` (see celery_worker.py), so the 202 also comes after the broker's confirm, as in producer-service.
Celery's own producer pool (broker_pool_limit, default 10 connections) is shared by the threads.

    uvicorn celery_app:app --loop uvloop --http httptools --port P --no-access-log
"""

from __future__ import annotations

import json
import uuid

from celery_worker import app as celery
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def _enqueue(payload: dict, event_id: str) -> None:
    celery.send_task("bench.send_welcome", args=[payload["email"], payload["name"], payload.get("locale", "en"),
                                                 event_id], task_id=event_id)


async def signup(request: Request) -> JSONResponse:
    payload = json.loads(await request.body())
    event_id = str(uuid.uuid4())
    await run_in_threadpool(_enqueue, payload, event_id)
    return JSONResponse({"event_id": event_id}, status_code=202)


app = Starlette(routes=[Route("/v1/signups", signup, methods=["POST"])])
