"""One execution's record of itself: its view, its legal transitions, its log, its observers.

The parts of an execution (approval, the change, the rollback window) share it,
so a status changes in one way only: `transition` checks the move is legal,
stamps the view and fans it out to the observers (`workflows/observers.py`).
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.execution import ExecutionView, Observation, Refusal, StepLogEntry
    from domain.notifications import NotificationEvent
    from domain.status import ExecutionStatus, can_transition, progress_percent
    from workflows.observers import Observer, settled


class Ended(Exception):
    """Ends the execution early with a final status and a reason: an answer, not a failure."""

    def __init__(self, status: ExecutionStatus, reason: str, refusal: Refusal | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.refusal = refusal


class Ledger:
    def __init__(self, view: ExecutionView, observers: list[Observer]) -> None:
        self.view = view
        self.observers = observers
        self.observed: Observation | None = None
        """What the last validation saw of the live resource."""
        self.plan: list[str] = []
        """The steps the last validation said the change would take."""

    @property
    def status(self) -> ExecutionStatus:
        return self.view.status

    def transition(self, status: ExecutionStatus, message: str, reason: str | None = None) -> None:
        current = self.view.status
        if status is not current and not can_transition(current, status):
            raise ApplicationError(
                f"illegal transition {current.value} -> {status.value}", type="IllegalTransition",
                non_retryable=True,
            )
        now = workflow.now()
        self.view.status = status
        self.view.step = message
        self.view.progress_percent = progress_percent(status)
        if reason is not None:
            self.view.reason = reason
        if settled(status):
            self.view.finished_at = now
        self.view.log.append(StepLogEntry(at=now, status=status, message=message))
        for observer in self.observers:
            observer.transitioned(self, current)

    def log(self, message: str) -> None:
        """A line in the execution's log; observers hear of it with the next change."""
        self.view.log.append(StepLogEntry(at=workflow.now(), status=self.view.status, message=message))
        self.view.updated_at = workflow.now()

    def changed(self) -> None:
        for observer in self.observers:
            observer.changed(self)

    def announce(self, event: NotificationEvent) -> None:
        """Something people are told of that is not a status change (a reminder, a warning)."""
        for observer in self.observers:
            observer.announced(self, event)

    def note(self, message: str) -> None:
        """A log line observers hear of at once."""
        self.log(message)
        self.changed()

    async def drain(self) -> None:
        """Wait for everything the observers started (writes, signals) before the run closes."""
        pending = [started for observer in self.observers for started in observer.pending()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
