"""Prometheus metrics of a queue system (the `metrics` extra: `prometheus-client`).

    from queueing import metrics

    async with open_system(...) as system:
        metrics.register(system)                          # into prometheus_client.REGISTRY
        async with trio.open_nursery() as nursery:
            port = await nursery.start(metrics.serve, 9464)   # http://127.0.0.1:9464/metrics
            ...

`queueing worker --metrics-port 9464` does the same for a worker process. The metrics and
the queries to graph them: docs/concepts/observability.md.
"""

from ._metrics import BUCKETS as BUCKETS
from ._metrics import QueueMetrics as QueueMetrics
from ._metrics import register as register
from ._metrics import serve as serve

__all__ = ["BUCKETS", "QueueMetrics", "register", "serve"]
