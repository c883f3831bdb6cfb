"""Read-model writes: the SQL view of executions and approvals that the CLI and API list.

Temporal's history stays the source of truth; these writes are idempotent
(newest `sequence` wins), so retries and out-of-order delivery are harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from activities.store_errors import store_call
from domain.execution import ExecutionView, LastChange, ResourceRef
from store.repository import Store


def records_task_queue(task_queue: str) -> str:
    """The task queue of the read-model writes of executions and plans on `task_queue`."""
    return f"{task_queue}-records"


class RecordActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name="record_execution")
    @store_call
    async def record_execution(self, view: ExecutionView) -> bool:
        return await self.store.upsert_execution(view)

    @activity.defn(name="last_change")
    @store_call
    async def last_change(self, ref: ResourceRef) -> LastChange | None:
        """Read-only, run as a local activity: when Reclaim last mutated this resource."""
        found = await self.store.last_change(
            ref.account_id, ref.region, ref.resource_id, exclude_execution_id=ref.exclude_execution_id
        )
        if found is None:
            return None
        return LastChange(execution_id=found.execution_id, status=found.status, at=found.at)

    def all(self) -> list[Callable[..., Any]]:
        return [self.record_execution, self.last_change]
