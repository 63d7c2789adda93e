"""A FastAPI service that hands slow work to a queue: the asyncio client, `connect()`.

    queueing worker tasks --broker redis://127.0.0.1:6379/0      # from this folder, any number
    QUEUEING_BROKER=redis://127.0.0.1:6379/0 python fastapi_app.py --port 8000
    python fastapi_app.py --port 8000 --server hypercorn-trio    # the same app under trio

    curl -i -X POST localhost:8000/jobs -d '{"image": "cat.png", "width": 128}'
    curl -i 'localhost:8000/jobs/<id>?wait=10'

The pattern (docs/how-to/web-applications.md):

- the lifespan opens ONE client at start-up and shares it on `app.state`; on shutdown
  (after the server stopped taking requests and finished those in flight) it closes it,
  which flushes what it still had to write;
- `POST /jobs` answers 202 with a `Location` as soon as the task is accepted, 503 with
  `Retry-After` when the queue is full or the broker does not answer, 422 for a payload
  the queue's type refuses;
- `GET /jobs/{id}?wait=S` long-polls: 200 with the outcome once there is one, 202 while it
  is pending or running, 404 for an id no task ever had, 410 for one whose result is no
  longer kept.

The same code runs under asyncio (uvicorn: `connect()` gives an `AsyncioClient`) and
under trio (hypercorn's trio worker: `connect()` gives the trio client).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from tasks import QUEUES, thumbnails

import queueing

BROKER = os.environ.get("QUEUEING_BROKER", "redis://127.0.0.1:6379/0")
#: The longest one long-poll holds a request (seconds): below proxies' idle timeouts.
MAX_WAIT = 30.0
#: Seconds a submit waits for a stalled broker before the request gets a 503.
BROKER_TIMEOUT = 1.0


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with queueing.connect(BROKER, *QUEUES, broker_timeout=BROKER_TIMEOUT) as client:
        app.state.queues = client
        yield
    # Here the server has stopped taking requests and finished those in flight; leaving
    # the block flushed the client's writes: every accepted task is in the broker.


app = FastAPI(lifespan=lifespan)


def unavailable(message: str, retry_after: float) -> JSONResponse:
    return JSONResponse(
        {"error": message},
        status_code=503,
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
    )


@app.post("/jobs")
async def submit(request: Request) -> JSONResponse:
    client = request.app.state.queues
    try:
        payload = await request.json()
    except ValueError:
        return JSONResponse({"error": "the body must be JSON"}, status_code=422)
    try:
        receipt = await client.submit(thumbnails, payload)
    except (queueing.PayloadError, queueing.PayloadTooLarge) as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)
    except queueing.QueueFull as exc:
        return unavailable(str(exc), exc.retry_after)
    except (queueing.BrokerError, queueing.SystemStopping) as exc:
        return unavailable(str(exc), 1)
    location = f"/jobs/{receipt.id}"
    return JSONResponse(
        {"id": receipt.id, "state": "pending", "location": location},
        status_code=202,
        headers={"Location": location},
    )


@app.get("/jobs/{task_id}")
async def job(request: Request, task_id: str, wait: float = 0.0) -> JSONResponse:
    client = request.app.state.queues
    if not 0 <= wait <= MAX_WAIT:
        return JSONResponse({"error": f"wait must be 0 to {MAX_WAIT:g}"}, status_code=422)
    receipt = client.receipt(task_id)
    try:
        result = await receipt.result(timeout=wait)
    except queueing.ResultTimeout:
        status = await receipt.status()
        return JSONResponse({"id": task_id, "state": status.state.value}, status_code=202)
    except queueing.TaskFailed as exc:
        error = f"{exc.error_type}: {exc.error}"
        body = {"id": task_id, "state": exc.outcome.value, "error": error}
        return JSONResponse(body, status_code=200)
    except queueing.UnknownTask as exc:
        return JSONResponse({"error": str(exc)}, status_code=410 if exc.expired else 404)
    except (queueing.BrokerError, queueing.SystemStopping) as exc:
        return unavailable(str(exc), 1)
    body = {"id": task_id, "state": "succeeded", "result": client.converter.unstructure(result)}
    return JSONResponse(body, status_code=200)


@app.delete("/jobs/{task_id}")
async def cancel(request: Request, task_id: str) -> JSONResponse:
    try:
        cancelled = await request.app.state.queues.receipt(task_id).cancel()
    except queueing.UnknownTask as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    return JSONResponse({"id": task_id, "cancelled": cancelled})


@app.get("/health")
async def health(request: Request) -> dict[str, Any]:
    return {"queues": request.app.state.queues.names}


def serve_trio(host: str, port: int) -> None:
    """hypercorn's trio worker; SIGINT or SIGTERM stops it gracefully."""
    import signal

    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = 10.0

    async def stopped() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                return

    trio.run(partial(serve, app, config, shutdown_trigger=stopped))  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--server", choices=["uvicorn", "hypercorn-trio"], default="uvicorn")
    parser.add_argument("--quiet", action="store_true", help="no access log (uvicorn)")
    args = parser.parse_args()
    if args.server == "uvicorn":
        import uvicorn

        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            timeout_graceful_shutdown=10,
            access_log=not args.quiet,
        )
    else:
        serve_trio(args.host, args.port)
