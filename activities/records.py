"""Read-model writes: the SQL view of executions and approvals that the CLI and API list.

Temporal's history stays the source of truth; these writes are idempotent
(newest `sequence` wins), so retries and out-of-order delivery are harmless.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.store_errors import STORE_UNAVAILABLE, store_call
from domain.execution import ExecutionView, LastChange, ResourceRef
from store.repository import Store


def _store_busy(message: str) -> ApplicationError:
    """A hand-off, not a fault: the workflow writes this view the durable way. Benign, so the SDK
    logs no traceback per view (a slow store under load made megabytes of them a minute);
    the pause itself is logged once, by `record_execution`."""
    return ApplicationError(message, type=STORE_UNAVAILABLE, non_retryable=True,
                            category=ApplicationErrorCategory.BENIGN)


def records_task_queue(task_queue: str) -> str:
    """The task queue of the read-model writes of executions and plans on `task_queue`."""
    return f"{task_queue}-records"


def plan_records_task_queue(task_queue: str) -> str:
    """The task queue of the store activities of plans on `task_queue` (since PLAN_TELLS_AND_HOLDS):
    apart from the executions' writes, whose retries under a wedged database would keep every
    slot of the records queue taken."""
    return f"{task_queue}-plan-records"


#: How long a local-activity write may wait for the store before the workflow writes the durable
#: way instead: a local activity holds a slot that validations share.
LOCAL_WRITE_PATIENCE = 1.0
#: After a local write ran out of patience, local writes are refused at once for this long
#: (then one tries again): a stalled store costs the local-activity slots nothing.
LOCAL_WRITES_PAUSED_FOR = 5.0


class RecordActivities:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._local_paused_until = 0.0

    @activity.defn(name="record_execution")
    @store_call
    async def record_execution(self, view: ExecutionView) -> bool:
        if not activity.info().is_local:  # the durable way, on the records queue: wait as long as it takes
            return await self.store.upsert_execution(view)
        if time.monotonic() < self._local_paused_until:
            raise _store_busy("the read model is slow; this view goes the durable way")
        try:
            # The write itself runs on if we stop waiting (store writes are cancellation-safe).
            return await asyncio.wait_for(self.store.upsert_execution(view), LOCAL_WRITE_PATIENCE)
        except TimeoutError:
            self._local_paused_until = time.monotonic() + LOCAL_WRITES_PAUSED_FOR
            activity.logger.warning("the read model did not answer within %s s: views go the durable way "
                                    "for %s s", LOCAL_WRITE_PATIENCE, LOCAL_WRITES_PAUSED_FOR)
            raise _store_busy(f"the read model did not answer within {LOCAL_WRITE_PATIENCE} s") from None

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
