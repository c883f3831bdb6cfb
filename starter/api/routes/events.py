"""/api/v1/executions/{id}/events: status changes of one execution as server-sent events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from domain.execution import ExecutionView
from domain.status import TERMINAL, ExecutionStatus
from starter.api.deps import ServicesDep, ViewerDep
from starter.api.routes.executions import _visible
from starter.executions import NotFound
from starter.polling import polled

log = logging.getLogger("reclaim.api")

router = APIRouter(prefix="/api/v1/executions", tags=["executions"])

#: How often the workflow's status query is asked: every change reaches the client within a second.
POLL_SECONDS = 0.2
#: A comment line this often keeps proxies from closing a quiet stream (a long approval wait).
KEEPALIVE_SECONDS = 15.0
#: Consecutive failed polls after which the stream gives up with an `error` event.
MAX_FAILURES = 25
#: Where the stream ends: the execution has settled.
SETTLED: frozenset[ExecutionStatus] = TERMINAL | {ExecutionStatus.COMPLETED}

_EXAMPLE = (
    'event: status\nid: 7\ndata: {"execution_id": "exec-rec-1", "status": "BACKING_UP", '
    '"step": "backing up", "sequence": 7, ...}\n\n'
)


@router.get(
    "/{execution_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"example": _EXAMPLE}},
              "description": "One `status` event per status change."},
        404: {"description": "No such execution, or another customer's."},
    },
)
async def events(execution_id: str, request: Request, principal: ViewerDep, svc: ServicesDep) -> StreamingResponse:
    """Server-sent events, one per status change of the execution.

    Each event is `event: status`, `id: <sequence>`, `data: <the execution view as JSON,
    without its log>`. The first event is the current status; every later change is
    sent within a second of happening (the workflow's status query is polled every
    200 ms, so statuses that pass faster than that may be skipped; the order is kept).

    The stream ends when the execution settles: COMPLETED or a terminal status. A later
    rollback of a COMPLETED execution is watched with a new stream. If the status cannot
    be read for a while, an `event: error` ends the stream. Another customer's execution
    answers 404, like a missing one.
    """
    await _visible(svc, principal, execution_id)
    return StreamingResponse(
        _stream(request, svc, execution_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _current(svc: Any, execution_id: str) -> ExecutionView:
    """The workflow's own view; the read model's when the workflow cannot answer (e.g. long gone)."""
    try:
        view: ExecutionView = await asyncio.wait_for(svc.executions.status(execution_id), timeout=5)
        return view
    except Exception as exc:
        stored: ExecutionView | None = await svc.store.get_execution(execution_id)
        if stored is None:
            raise NotFound(f"no execution {execution_id}") if isinstance(exc, NotFound) else exc from None
        return stored


async def _stream(request: Request, svc: Any, execution_id: str) -> AsyncIterator[str]:
    last_status: ExecutionStatus | None = None
    last_sequence = -1
    failures = 0
    quiet_since = time.monotonic()

    async def look() -> ExecutionView | Exception:
        """The current view, or why it could not be read this time (a missing execution ends it)."""
        try:
            return await _current(svc, execution_id)
        except NotFound:
            raise
        except Exception as exc:
            return exc

    try:
        async with aclosing(polled(look, interval=POLL_SECONDS)) as looks:
            async for seen in looks:
                if await request.is_disconnected():
                    return
                if isinstance(seen, Exception):
                    failures += 1
                    if failures >= MAX_FAILURES:
                        log.warning("giving up the event stream of %s: %s", execution_id, seen)
                        yield _event("error", f"the status of {execution_id} cannot be read; reconnect later")
                        return
                else:
                    failures = 0
                    # The sequence only grows: a stale fallback view never sends the stream backwards.
                    if seen.status is not last_status and seen.sequence >= last_sequence:
                        last_status, last_sequence = seen.status, seen.sequence
                        yield _event("status", seen.model_dump_json(exclude={"log"}), event_id=seen.sequence)
                        quiet_since = time.monotonic()
                        if seen.status in SETTLED:
                            return
                if time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                    yield ": keep-alive\n\n"
                    quiet_since = time.monotonic()
    except NotFound as exc:
        yield _event("error", str(exc))


def _event(name: str, data: str, event_id: int | None = None) -> str:
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return "\n".join(lines) + "\n\n"
