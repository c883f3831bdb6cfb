"""Small builders shared by the workflow tests."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowHistory

from domain.execution import ExecutionOptions, ExecutionRequest
from domain.recommendation import Recommendation

ACCOUNT = "123456789012"
REGION = "us-east-1"


def recommendation(kind: str, resource_id: str, params: dict[str, Any] | None = None,
                   savings: float = 50.0, **extra: Any) -> Recommendation:
    return Recommendation(
        id=f"rec-{uuid.uuid4().hex[:12]}",
        customer_id=extra.pop("customer_id", "acme"),
        account_id=ACCOUNT,
        region=REGION,
        kind=kind,
        resource_id=resource_id,
        params=params or {},
        estimated_monthly_savings=savings,
        **extra,
    )


def request(rec: Recommendation, requested_by: str = "alice", **options: Any) -> ExecutionRequest:
    options.setdefault("step_timeout", timedelta(seconds=20))
    options.setdefault("verify_timeout", timedelta(seconds=20))
    return ExecutionRequest(recommendation=rec, requested_by=requested_by, options=ExecutionOptions(**options))


def event_types(history: WorkflowHistory) -> list[str]:
    from temporalio.api.enums.v1 import EventType

    return [EventType.Name(e.event_type) for e in history.events]


def activity_names(history: WorkflowHistory) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


def attempts_of(history: WorkflowHistory, activity_type: str) -> list[int]:
    """The attempt number each completed or failed run of an activity reached, in order."""
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    return [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and scheduled[e.activity_task_started_event_attributes.scheduled_event_id] == activity_type
    ]


def completed_results(history: WorkflowHistory, activity_type: str) -> list[dict[str, Any]]:
    """The `changed` flag of every completed run of an activity (a StepResult), in order."""
    import json

    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    results = []
    for e in history.events:
        if not e.HasField("activity_task_completed_event_attributes"):
            continue
        done = e.activity_task_completed_event_attributes
        if scheduled[done.scheduled_event_id] == activity_type:
            result = json.loads(done.result.payloads[0].data)
            results.append({"changed": result["changed"]})
    return results


async def eventually(check: Any, timeout: float = 15.0) -> None:
    """The read model is written asynchronously (by design): wait until `check()` (async) holds."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check.__doc__ or check}")
        await asyncio.sleep(0.1)
