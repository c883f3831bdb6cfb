"""Prometheus metrics of one API app, in its own `CollectorRegistry` (tests build many apps).

- `reclaim_executions{status}`: a gauge, counted from the read model at scrape time.
- `reclaim_approval_wait_seconds`: a histogram, observed when an approve or reject through
  the API succeeds: from the start of the execution's latest AWAITING_APPROVAL stint to now.
- `reclaim_http_request_duration_seconds{method,route,status}`: a histogram of every request,
  labelled with the route *template* (`/api/v1/executions/{execution_id}`), never the raw path.
  A server-sent event stream counts for as long as it stays open.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.execution import ExecutionView
from domain.status import ExecutionStatus
from store.repository import Store

log = logging.getLogger("reclaim.api")

#: The text exposition format Prometheus scrapes (0.0.4), whatever the client library defaults to.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Route label of a request no route matched, so unknown paths cannot grow the label set.
UNMATCHED = "<unmatched>"

_DECISION_ROUTES = frozenset({
    "/api/v1/executions/{execution_id}/approve",
    "/api/v1/executions/{execution_id}/reject",
})

_APPROVAL_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600,
                     48 * 3600, 7 * 24 * 3600)


class ApiMetrics:
    """The metric objects of one app and the registry they live in."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.executions = Gauge(
            "reclaim_executions", "Executions in the read model, by status (counted at scrape time).",
            ["status"], registry=self.registry,
        )
        self.approval_wait = Histogram(
            "reclaim_approval_wait_seconds",
            "How long an execution awaited approval before a decision through the API succeeded.",
            buckets=_APPROVAL_BUCKETS, registry=self.registry,
        )
        self.http_duration = Histogram(
            "reclaim_http_request_duration_seconds", "Duration of API requests.",
            ["method", "route", "status"], registry=self.registry,
        )

    async def refresh(self, store: Store) -> None:
        """Count executions per status (one COUNT per status; every status is exported, zeros too)."""
        counts = {s: (await store.list_executions(status=s, limit=1)).total for s in ExecutionStatus}
        for status, count in counts.items():
            self.executions.labels(status=status.value).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def observe_decision(self, services: Any, execution_id: str) -> None:
        """After a successful approve/reject: how long the execution had been awaiting approval."""
        since = None
        stored = await services.store.get_execution(execution_id)
        if stored is not None:
            since = awaiting_since(stored)
        if since is None:  # the read model lags: ask the workflow
            since = awaiting_since(await services.executions.status(execution_id))
        if since is not None:
            self.approval_wait.observe(max(0.0, (datetime.now(UTC) - since).total_seconds()))


def awaiting_since(view: ExecutionView) -> datetime | None:
    """Start of the latest run of AWAITING_APPROVAL entries in the log (an execution may wait twice)."""
    since = None
    previous: ExecutionStatus | None = None
    for entry in view.log:
        if entry.status is ExecutionStatus.AWAITING_APPROVAL and previous is not ExecutionStatus.AWAITING_APPROVAL:
            since = entry.at
        previous = entry.status
    return since


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class MetricsMiddleware:
    """Pure ASGI (streams pass through untouched): times each request and watches decisions."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception reaches the server's error handler

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if status == 200 and scope["method"] == "POST" and route_of(scope) in _DECISION_ROUTES:
                    await self._observe_decision(scope)  # before the client hears back: a scrape sees it
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.http_duration.labels(
                method=scope["method"], route=route_of(scope), status=str(status)
            ).observe(time.perf_counter() - started)

    async def _observe_decision(self, scope: Scope) -> None:
        try:
            services = scope["app"].state.services
            execution_id = str(scope.get("path_params", {})["execution_id"])
            await self.metrics.observe_decision(services, execution_id)
        except Exception:  # a metric must never break the decision it describes
            log.warning("could not observe the approval wait", exc_info=True)


def install(app: FastAPI) -> ApiMetrics:
    """Give `app` its own registry (`app.state.metrics`) and the timing middleware."""
    metrics = ApiMetrics()
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return metrics
