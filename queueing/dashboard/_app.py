"""The web dashboard as an ASGI app (Starlette): the page, and the JSON it reads and acts
through.

Routes (JSON unless said):

- `GET /`: the page (HTML, with its script and style inline in `static/`);
- `GET /api/snapshot`: the sampler's latest `Snapshot`;
- `GET /api/history`: the points of the charts (rates and latencies per reading);
- `GET /api/tasks/{id}`: one task, as `queueing inspect --json` shows it;
- `GET /api/queues/{queue}/dead-letters?limit=N`: the newest dead letters, oldest first;
- `POST /api/queues/{queue}/dead-letters/requeue` (`{"ids": [...]}`, or `{}` for all);
- `POST /api/queues/{queue}/dead-letters/purge`.

A POST (it changes something) needs the token: `Authorization: Bearer TOKEN`. A dashboard
bound beyond loopback (`private=False`) needs it on every `/api/` call, since task
payloads and tracebacks may be private; on loopback it answers only requests addressed to
a loopback name (`Host:`), so a web page elsewhere cannot read it through a DNS name that
points at 127.0.0.1.
"""

from __future__ import annotations

import hmac
import json
from importlib import resources
from typing import TYPE_CHECKING

from .._cli_render import letter_doc, status_doc
from .._exceptions import QueueFull, QueueingError, UnknownQueue, UnknownTask
from .._task import TaskState

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from .._system import QueueSystem
    from ._sampler import Sampler

#: Host names a dashboard on loopback answers to (the port aside).
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: Dead letters a page lists at most per queue.
MAX_LETTERS = 500
#: Dead letters listed when the page does not say.
DEFAULT_LETTERS = 50
#: Bytes of a POST body read at most (a list of ids).
MAX_BODY = 1 << 20


def _page(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def _host_name(host: str) -> str:
    """A `Host:` header's name, without the port (`[::1]:8000` is `[::1]`)."""
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def dashboard_app(
    system: QueueSystem, sampler: Sampler, *, token: str, loopback: bool = True
) -> Starlette:
    """The dashboard's ASGI app for `system`, its figures from `sampler` (which the caller
    runs). `token` is required by every action (and, when not `loopback`, every read)."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    index = _page("index.html")
    for asset in ("dashboard.css", "dashboard.js"):
        index = index.replace(f"{{{{ {asset} }}}}", _page(asset))

    def problem(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def refused(request: Request, *, action: bool) -> JSONResponse | None:
        """Why a request is refused (None: it is not)."""
        if loopback and _host_name(request.headers.get("host", "")) not in LOOPBACK_NAMES:
            return problem(421, "this dashboard answers on its loopback address only")
        if not action and loopback:
            return None
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not value:
            what = "this action" if action else "a dashboard bound beyond loopback"
            return problem(
                401,
                f"{what} needs the dashboard's token: send `Authorization: Bearer TOKEN` "
                "(the page takes it from its link, `#token=...`)",
            )
        if not hmac.compare_digest(value.encode(), token.encode()):
            return problem(403, "wrong token: use the one the dashboard printed at start")
        return None

    async def page(request: Request) -> Response:
        if loopback and _host_name(request.headers.get("host", "")) not in LOOPBACK_NAMES:
            return problem(421, "this dashboard answers on its loopback address only")
        return HTMLResponse(index, headers={"cache-control": "no-store"})

    async def snapshot(request: Request) -> Response:
        if (no := refused(request, action=False)) is not None:
            return no
        current = sampler.snapshot or await sampler.sample()
        return JSONResponse(current.to_doc())

    async def history(request: Request) -> Response:
        if (no := refused(request, action=False)) is not None:
            return no
        return JSONResponse([point.to_doc() for point in sampler.history])

    async def task(request: Request) -> Response:
        if (no := refused(request, action=False)) is not None:
            return no
        task_id = request.path_params["task_id"]
        try:
            receipt = system.receipt(task_id)
            status = await receipt.status()
            doc = status_doc(status)
            if status.state is TaskState.SUCCEEDED:
                doc["result"] = await receipt.result()
        except UnknownTask as exc:
            return problem(404, str(exc))
        return JSONResponse(json.loads(json.dumps(doc, default=str)))

    async def letters(request: Request) -> Response:
        if (no := refused(request, action=False)) is not None:
            return no
        try:
            limit = int(request.query_params.get("limit", DEFAULT_LETTERS))
        except ValueError:
            return problem(400, "limit must be a whole number")
        if not 1 <= limit <= MAX_LETTERS:
            return problem(400, f"limit must be 1 to {MAX_LETTERS}, got {limit}")
        try:
            found = await system.dead_letters(request.path_params["queue"], limit)
        except UnknownQueue as exc:
            return problem(404, str(exc))
        return JSONResponse(json.loads(json.dumps([letter_doc(x) for x in found], default=str)))

    async def requeue(request: Request) -> Response:
        if (no := refused(request, action=True)) is not None:
            return no
        body = await request.body()
        if len(body) > MAX_BODY:
            return problem(413, f"the body is over {MAX_BODY} bytes: requeue fewer ids at once")
        try:
            doc = json.loads(body or b"{}")
            ids = doc.get("ids")
            if ids is not None and not (
                isinstance(ids, list) and all(isinstance(i, str) for i in ids)
            ):
                raise ValueError("ids must be a list of task ids")
        except (ValueError, AttributeError) as exc:
            return problem(400, f'the body must be {{"ids": [...]}} or {{}} for all: {exc}')
        try:
            receipts = await system.requeue(request.path_params["queue"], ids)
        except (UnknownQueue, UnknownTask) as exc:
            return problem(404, str(exc))
        except QueueFull as exc:
            return problem(503, f"requeued none or some, then: {exc}")
        await sampler.sample()  # the page shows the queue as it is now
        return JSONResponse({"requeued": [r.id for r in receipts]})

    async def purge(request: Request) -> Response:
        if (no := refused(request, action=True)) is not None:
            return no
        try:
            count = await system.purge_dead_letters(request.path_params["queue"])
        except UnknownQueue as exc:
            return problem(404, str(exc))
        await sampler.sample()
        return JSONResponse({"purged": count})

    async def failed(request: Request, exc: Exception) -> Response:
        return problem(502, f"{type(exc).__name__}: {exc}")

    routes = [
        Route("/", page),
        Route("/api/snapshot", snapshot),
        Route("/api/history", history),
        Route("/api/tasks/{task_id:path}", task),
        Route("/api/queues/{queue}/dead-letters", letters),
        Route("/api/queues/{queue}/dead-letters/requeue", requeue, methods=["POST"]),
        Route("/api/queues/{queue}/dead-letters/purge", purge, methods=["POST"]),
    ]
    # A broker away: the reason, not a 500 page.
    return Starlette(routes=routes, exception_handlers={QueueingError: failed})
