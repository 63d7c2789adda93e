"""A Flask service that hands slow work to a queue: the blocking client, `connect_sync()`.

    queueing worker tasks --broker redis://127.0.0.1:6379/0      # from this folder, any number
    QUEUEING_BROKER=redis://127.0.0.1:6379/0 python flask_app.py --port 8001

    curl -i -X POST localhost:8001/jobs -d '{"image": "cat.png", "width": 128}'
    curl -i 'localhost:8001/jobs/<id>?wait=10'

The same routes and status codes as fastapi_app.py, from synchronous code:

- `create_app()` opens ONE client per process (`connect_sync()` starts its own thread) and
  keeps it in `app.extensions`; every request thread shares it. With a pre-forking server
  (gunicorn), call `create_app()` in each worker, after the fork (the app factory pattern
  does that); a client opened before a fork refuses to work in the child, saying so;
- the client closes when the process exits (at exit, or `close()` it yourself after the
  server stopped), which flushes what it still had to write;
- a long-poll holds one of the server's threads for up to `wait` seconds: size the thread
  pool for the polls you allow (waitress `threads=`), or keep `wait` short.

This file serves with waitress (`pip install waitress`); `flask run` works too.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Any

from flask import Flask, Response, jsonify, request
from tasks import QUEUES, thumbnails

import queueing

BROKER = os.environ.get("QUEUEING_BROKER", "redis://127.0.0.1:6379/0")
#: The longest one long-poll holds a request thread (seconds).
MAX_WAIT = 30.0
#: Seconds a submit waits for a stalled broker before the request gets a 503.
BROKER_TIMEOUT = 1.0


def reply(body: dict[str, Any], status: int, **headers: str) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers)
    return response


def unavailable(message: str, retry_after: float) -> Response:
    return reply({"error": message}, 503, **{"Retry-After": str(max(1, math.ceil(retry_after)))})


def create_app(broker: str = BROKER) -> Flask:
    app = Flask(__name__)
    client = queueing.connect_sync(broker, *QUEUES, broker_timeout=BROKER_TIMEOUT)
    app.extensions["queues"] = client

    @app.post("/jobs")
    def submit() -> Response:
        payload = request.get_json(force=True, silent=True)
        if payload is None:
            return reply({"error": "the body must be JSON"}, 422)
        try:
            receipt = client.submit(thumbnails, payload)
        except (queueing.PayloadError, queueing.PayloadTooLarge) as exc:
            return reply({"error": str(exc)}, 422)
        except queueing.QueueFull as exc:
            return unavailable(str(exc), exc.retry_after)
        except (queueing.BrokerError, queueing.SystemStopping) as exc:
            return unavailable(str(exc), 1)
        location = f"/jobs/{receipt.id}"
        body = {"id": receipt.id, "state": "pending", "location": location}
        return reply(body, 202, Location=location)

    @app.get("/jobs/<task_id>")
    def job(task_id: str) -> Response:
        try:
            wait = float(request.args.get("wait", "0"))
        except ValueError:
            wait = -1.0
        if not 0 <= wait <= MAX_WAIT:
            return reply({"error": f"wait must be 0 to {MAX_WAIT:g}"}, 422)
        receipt = client.receipt(task_id)
        try:
            result = receipt.result(timeout=wait)
        except queueing.ResultTimeout:
            return reply({"id": task_id, "state": receipt.status().state.value}, 202)
        except queueing.TaskFailed as exc:
            error = f"{exc.error_type}: {exc.error}"
            return reply({"id": task_id, "state": exc.outcome.value, "error": error}, 200)
        except queueing.UnknownTask as exc:
            return reply({"error": str(exc)}, 410 if exc.expired else 404)
        except (queueing.BrokerError, queueing.SystemStopping) as exc:
            return unavailable(str(exc), 1)
        body = {"id": task_id, "state": "succeeded", "result": client.converter.unstructure(result)}
        return reply(body, 200)

    @app.delete("/jobs/<task_id>")
    def cancel(task_id: str) -> Response:
        try:
            cancelled = client.receipt(task_id).cancel()
        except queueing.UnknownTask as exc:
            return reply({"error": str(exc)}, 404)
        return reply({"id": task_id, "cancelled": cancelled}, 200)

    @app.get("/health")
    def health() -> Response:
        return reply({"queues": client.names}, 200)

    return app


if __name__ == "__main__":
    import signal
    import sys

    import waitress

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    app = create_app()
    # waitress stops on SIGINT; make SIGTERM (what process managers send) the same. The
    # client closes at exit, after the server stopped: its writes are flushed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    waitress.serve(app, host=args.host, port=args.port, threads=args.threads)
