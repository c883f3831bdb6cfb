"""`Steering`: what the CLI asks of an execution service, whichever way it reaches it.

Two implementations: `starter.executions.Executions` talks to Temporal (and the read model)
directly; `starter.api_client.ApiExecutions` goes through the REST API. Both raise the
errors of `starter.executions` (`NotFound`, `Refused`, `ResourceBusy`, `InvalidCursor`, or a
plain `ReclaimError`), so a command fails with the same one line on either path.

A new steering operation: a method here, one in each implementation (the API one calls
its route in `starter/api/routes/`), and the command in `starter/cli.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from domain.execution import ApprovalInput, ApprovalRecord, ExecutionRequest, ExecutionView, RollbackInput
from domain.notifications import Acknowledgement
from domain.recommendation import Recommendation
from domain.status import ExecutionStatus
from starter.executions import SETTLED, Started


class Steering(Protocol):
    async def save_recommendations(self, recs: list[Recommendation]) -> None:
        """Make the recommendations known before they are started (a no-op where starting keeps them)."""
        ...

    async def start(self, request: ExecutionRequest, *, force: bool = False) -> Started:
        """Start, or find the execution this recommendation already has; a stale one
        (`StaleRecommendation`) only with `force`."""
        ...

    async def status(self, execution_id: str) -> ExecutionView: ...

    async def wait(
        self, execution_id: str, until: frozenset[ExecutionStatus] = SETTLED, timeout: float = 600.0
    ) -> ExecutionView:
        """The execution once it reaches one of `until` (or can no longer move)."""
        ...

    async def decide(self, execution_id: str, approve: bool, attempt: ApprovalInput) -> ApprovalRecord:
        """Approve or reject. A refusal (`Refused`) is in the approvals audit trail once raised:
        refused updates never reach a workflow's history, so the implementation records them."""
        ...

    async def rollback(self, execution_id: str, request: RollbackInput) -> str: ...

    async def cancel(self, execution_id: str) -> None: ...

    async def acknowledge(self, execution_id: str, ack: Acknowledgement) -> Acknowledgement:
        """Silence a failed undo's repeated alarm (`NotFound` when none rings, `Refused` for a viewer)."""
        ...

    async def list_executions(
        self, *, customer_id: str | None = None, status: ExecutionStatus | None = None, limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[ExecutionView], str | None]:
        """Up to `limit` executions from the read model, newest first, from `cursor`; and the cursor
        of what follows them (None at the end). `InvalidCursor` for a cursor it did not issue."""
        ...


if TYPE_CHECKING:  # mypy holds both implementations to the protocol (tests/test_steering.py: at run time)
    from starter.api_client import ApiExecutions
    from starter.executions import Executions

    def _both_steer(temporal: Executions, api: ApiExecutions) -> tuple[Steering, Steering]:
        return temporal, api
