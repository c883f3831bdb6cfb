"""The per-resource mutex: a workflow whose id names the resource.

Temporal refuses to start a second running workflow with the same id, so
holding the lease is atomic without any database. The holder starts it as a
child and signals `release`; if the holder dies, the lease is terminated with it
(parent close policy).
"""

from temporalio import workflow

from domain.base import StrictModel


class LeaseInput(StrictModel):
    holder: str


@workflow.defn(name="ResourceLease")
class ResourceLeaseWorkflow:
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
