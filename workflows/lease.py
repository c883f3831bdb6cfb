"""The per-resource mutex: a workflow whose id names the resource.

Temporal refuses to start a second running workflow with the same id, so
holding the lease is atomic without any database. The holder starts it as a
child and signals `release`; if the holder dies, the lease is terminated with it
(parent close policy).
"""

from typing import Any

from temporalio import workflow
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ChildWorkflowCancellationType, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from domain.base import StrictModel
    from domain.execution import lease_id_for
    from domain.presentation import lease_summary
    from workflows import versions


class LeaseInput(StrictModel):
    holder: str


@workflow.defn(name="ResourceLease", sandboxed=False)
class ResourceLeaseWorkflow:
    """Outside the workflow sandbox (`sandboxed=False`): it waits for one signal and keeps no
    state but its holder, and one runs per execution. The sandbox's per-run isolation (this
    module imported again in a fresh sandbox for each run, every activation entered through
    it) cost the worker more CPU than the lease's own three activations (py-spy, race N=100).
    Nothing here reads a clock, a random number or the environment."""

    def __init__(self) -> None:
        self._released = False
        self._holder = ""

    @workflow.run
    async def run(self, lease: LeaseInput) -> None:
        self._holder = lease.holder
        await workflow.wait_condition(lambda: self._released)

    @workflow.signal
    def release(self) -> None:
        self._released = True

    @workflow.query
    def holder(self) -> str:
        return self._holder


class LeaseHandle:
    """An execution's hold on its resource: the `ResourceLease` child it started, if any.

    Held through validation, approval and the change; let go before COMPLETED shows
    (the rollback window does not block the resource) and taken again by a rollback.
    """

    def __init__(self, account_id: str, region: str, resource_id: str, holder: str) -> None:
        self._id = lease_id_for(account_id, region, resource_id)
        self._summary = lease_summary(resource_id, holder)
        self._holder = holder
        self._child: workflow.ChildWorkflowHandle[Any, Any] | None = None

    async def try_acquire(self) -> bool:
        """Take the resource, or False when another execution holds it (nothing waits)."""
        try:
            self._child = await workflow.start_child_workflow(
                ResourceLeaseWorkflow.run,
                LeaseInput(holder=self._holder),
                id=self._id,
                static_summary=self._summary,
                parent_close_policy=ParentClosePolicy.TERMINATE,  # dies with a holder that dies
                cancellation_type=ChildWorkflowCancellationType.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            return False
        return True

    async def release(self) -> None:
        """Let go (nothing when not held) and wait until the lease has really closed: a rollback
        right after COMPLETED takes it again, and under load the old one could still be open."""
        if self._child is None:
            return
        child, self._child = self._child, None
        await child.signal(ResourceLeaseWorkflow.release)
        if versions.uses(versions.AWAIT_LEASE_RELEASE):
            await child
