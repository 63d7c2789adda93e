"""Dashboards of a running system: the snapshot sampler that `queueing top` and the web
dashboard share, and the web dashboard itself (`queueing dashboard`, `serve_dashboard`).

The sampler needs nothing more than the core package; the web dashboard needs the
`dashboard` extra (`pip install 'trio-queueing[dashboard]'`: Starlette and hypercorn).
"""

from ._app import dashboard_app as dashboard_app
from ._sampler import Point as Point
from ._sampler import Sampler as Sampler
from ._serve import Dashboard as Dashboard
from ._serve import DashboardError as DashboardError
from ._serve import serve_dashboard as serve_dashboard
from ._views import FailureView as FailureView
from ._views import ProcessView as ProcessView
from ._views import QueueView as QueueView
from ._views import ScheduleView as ScheduleView
from ._views import Snapshot as Snapshot

__all__ = [
    "Dashboard",
    "DashboardError",
    "FailureView",
    "Point",
    "ProcessView",
    "QueueView",
    "Sampler",
    "ScheduleView",
    "Snapshot",
    "dashboard_app",
    "serve_dashboard",
]
