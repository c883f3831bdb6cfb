"""The worker's own `/metrics`: its notification delivery counters, served over HTTP for Prometheus.

Why a server of its own: deliveries run in the worker process (`activities/notify/metrics.py`
counts them there), and the API's `/metrics` is another process that cannot see them. Off unless
`RECLAIM_WORKER_METRICS_PORT` is set; `0` takes any free port (the URL says which).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import start_http_server

from activities.notify.metrics import REGISTRY


@contextlib.contextmanager
def metrics_served(host: str, port: int | None) -> Iterator[str | None]:
    """Serve the worker's registry on `host:port` until the block ends; yields the URL (None: off).

    A port that is taken stops start-up with a sentence naming the setting, not a bare OSError.
    """
    if port is None:
        yield None
        return
    try:
        server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        raise RuntimeError(f"worker metrics: cannot listen on {host}:{port} ({exc.strerror}); "
                           f"choose another RECLAIM_WORKER_METRICS_PORT") from None
    try:
        yield f"http://{host}:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
