"""Who hears of an execution's progress: registered in one place, `observers_for`.

An execution's status transitions and view changes fan out to observers, so the
lifecycle in `execution.py` says only what happened. An observer issues its
commands (activities, signals, upserts) at once and keeps what it started, so
the workflow can wait for all of it (`drain`) before it closes.

The order of `observers_for` is the order of their commands in the history:
recorded histories replay only if it stays the same. A new observer (a
notification channel, say) goes at the end, behind its own patch
(`workflows/versions.py`), and touches this module and its tests only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from temporalio import workflow
from temporalio.exceptions import FailureError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.records import RecordActivities, records_task_queue
    from domain.execution import ExecutionRequest, ExecutionView
    from domain.notifications import DEFAULT_SEVERITY, AlarmInput, Notification, NotificationEvent
    from domain.plan import ItemSettled, ItemWaiting
    from domain.presentation import execution_details
    from domain.status import TERMINAL, ExecutionStatus
    from workflows import search_attributes as sa
    from workflows import versions
    from workflows.alarm import RollbackAlarmWorkflow, alarm_id
    from workflows.notify import tell
    from workflows.options import LOCAL_RECORD_TIMEOUT, ONE_ATTEMPT, RECORD_RETRY, RECORD_TIMEOUT

if TYPE_CHECKING:
    from workflows.ledger import Ledger

S = ExecutionStatus


class Observer(Protocol):
    def transitioned(self, ledger: Ledger, previous: ExecutionStatus) -> None:
        """The status changed to `ledger.view.status` (the view already says so)."""

    def changed(self, ledger: Ledger) -> None:
        """Something else in the view changed (a log line, an approval, a refused rollback)."""

    def announced(self, ledger: Ledger, event: NotificationEvent) -> None:
        """People are to be told of `event`, which is not a status change (a reminder, a warning)."""

    def pending(self) -> list[Awaitable[Any]]:
        """What this observer started and the workflow must see finish before it closes."""


def settled(status: ExecutionStatus) -> bool:
    """The change is done or never happens: the moment a plan and a person are told."""
    return status in TERMINAL or status is S.COMPLETED


class _Started:
    """Keeps the futures an observer starts, for `pending`."""

    def __init__(self) -> None:
        self._started: list[Awaitable[Any]] = []

    def changed(self, ledger: Ledger) -> None:
        pass

    def announced(self, ledger: Ledger, event: NotificationEvent) -> None:
        pass

    def pending(self) -> list[Awaitable[Any]]:
        started, self._started = self._started, []
        return started


class PlanWaitingNotifier(_Started):
    """Tells the plan when an item starts or stops waiting for a person (so `plan watch` can
    say that only people can move it)."""

    def __init__(self, request: ExecutionRequest) -> None:
        super().__init__()
        self._plan_id = request.plan_id

    def transitioned(self, ledger: Ledger, previous: ExecutionStatus) -> None:
        view = ledger.view
        waiting = view.status is S.AWAITING_APPROVAL
        if (previous is S.AWAITING_APPROVAL) == waiting or view.status in TERMINAL:
            return
        parent = workflow.info().parent
        if self._plan_id is None or parent is None or not versions.decided_at_start():
            return
        handle = workflow.get_external_workflow_handle(parent.workflow_id)
        signal = ItemWaiting(execution_id=view.execution_id, waiting=waiting)
        self._started.append(asyncio.ensure_future(handle.signal("item_waiting", signal)))


class SearchAttributes(_Started):
    """The status as a search attribute (Web UI and `temporal workflow list` filter on it) and
    the Web UI's details pane (user metadata: no command)."""

    def transitioned(self, ledger: Ledger, previous: ExecutionStatus) -> None:
        workflow.upsert_search_attributes([sa.EXECUTION_STATUS.value_set(ledger.view.status.value)])
        workflow.set_current_details(execution_details(ledger.view))


class ReadModelRecorder(_Started):
    """Writes the read model without waiting for it: a database outage must not stall AWS work.
    Newest `sequence` wins in the store, so writes may land in any order."""

    def transitioned(self, ledger: Ledger, previous: ExecutionStatus) -> None:
        self.changed(ledger)

    def changed(self, ledger: Ledger) -> None:
        view = ledger.view
        view.sequence += 1
        view.updated_at = workflow.now()
        copy = view.model_copy(deep=True)
        if versions.uses(versions.READ_MODEL_LOCAL_WRITES):
            self._started.append(asyncio.ensure_future(self._write_locally(copy, view)))
        else:
            self._started.append(self._write_durably(copy))

    async def _write_locally(self, copy: ExecutionView, live: ExecutionView) -> None:
        """One attempt as a local activity: a marker in the history, no activity task, no extra
        workflow task, and the view itself stays out of the history. If the store does not
        answer, the newest view goes the durable way, retried until it lands."""
        try:
            await workflow.execute_local_activity_method(
                RecordActivities.record_execution, copy,
                schedule_to_close_timeout=LOCAL_RECORD_TIMEOUT, retry_policy=ONE_ATTEMPT,
            )
        except FailureError:  # ActivityError, or the ApplicationError/TimeoutError itself for a local one
            await self._write_durably(live.model_copy(deep=True))

    @staticmethod
    def _write_durably(view: ExecutionView) -> workflow.ActivityHandle[Any]:
        # On the records queue: a wedged database must never hold a slot that AWS work needs.
        queue = records_task_queue(workflow.info().task_queue) if versions.decided_at_start() else None
        return workflow.start_activity_method(
            RecordActivities.record_execution, view, task_queue=queue,
            start_to_close_timeout=RECORD_TIMEOUT, retry_policy=RECORD_RETRY,
        )


class PlanSettledNotifier(_Started):
    """Tells the plan its item settled, once: a completed change stays open for its rollback
    window, and the plan must not wait for that."""

    def __init__(self, request: ExecutionRequest) -> None:
        super().__init__()
        self._plan_id = request.plan_id
        self._told = False

    def transitioned(self, ledger: Ledger, previous: ExecutionStatus) -> None:
        view, parent = ledger.view, workflow.info().parent
        if not settled(view.status) or self._plan_id is None or parent is None or self._told:
            return
        self._told = True
        message = ItemSettled(
            execution_id=view.execution_id, status=view.status, reason=view.reason, refusal=view.refusal,
            actual_monthly_savings=view.actual_monthly_savings,
            observed=ledger.observed if view.dry_run else None,  # a dry run's report shows it
        )
        handle = workflow.get_external_workflow_handle(parent.workflow_id)
        self._started.append(asyncio.ensure_future(handle.signal("item_settled", message)))


#: Status -> what people are told when an execution reaches it (from AWAITING_APPROVAL to a
#: status that goes on, they hear it was approved).
_TOLD: dict[ExecutionStatus, NotificationEvent] = {
    S.AWAITING_APPROVAL: NotificationEvent.APPROVAL_REQUESTED,
    S.REJECTED: NotificationEvent.REJECTED,
    S.EXPIRED: NotificationEvent.EXPIRED,
    S.COMPLETED: NotificationEvent.COMPLETED,
    S.ROLLED_BACK: NotificationEvent.ROLLED_BACK,
    S.FAILED: NotificationEvent.FAILED,
    S.ROLLBACK_FAILED: NotificationEvent.ROLLBACK_FAILED,
}


class Notifier(_Started):
    """Tells people through the notify file's channels (`activities/notify/`, `workflows/notify.py`).
    It never fails or holds up the change. Since TELLING_AHEAD it also tells what is not a
    status change (reminders, owner warnings), and a failed undo starts the alarm that
    repeats until acknowledged (`workflows/alarm.py`) instead of telling once."""

    def __init__(self, request: ExecutionRequest) -> None:
        super().__init__()
        self._request = request
        self._sent: dict[NotificationEvent, int] = {}

    def transitioned(self, ledger: Ledger, previous: ExecutionStatus) -> None:
        if not versions.notifies():
            return
        view = ledger.view
        event = _TOLD.get(view.status)
        if event is None and previous is S.AWAITING_APPROVAL and view.status not in TERMINAL:
            event = NotificationEvent.APPROVED
        if event is None:
            return
        notification = self._notification(ledger, event)
        if event is NotificationEvent.ROLLBACK_FAILED and versions.tells_ahead():
            self._started.append(asyncio.ensure_future(self._raise_alarm(notification)))
            return
        self._started.append(asyncio.ensure_future(tell(notification)))

    def announced(self, ledger: Ledger, event: NotificationEvent) -> None:
        self._started.append(asyncio.ensure_future(tell(self._notification(ledger, event))))

    def _notification(self, ledger: Ledger, event: NotificationEvent) -> Notification:
        view, rec = ledger.view, self._request.recommendation
        sequence = self._sent.get(event, 0)
        self._sent[event] = sequence + 1
        return Notification(
            event=event, subject_id=view.execution_id, sequence=sequence, at=workflow.now(),
            severity=DEFAULT_SEVERITY[event], customer_id=rec.customer_id, account_id=rec.account_id,
            region=rec.region, kind=rec.kind, resource_id=rec.resource_id,
            resource_tags=dict(ledger.observed.tags) if ledger.observed else {}, risk=view.risk,
            risk_reasons=list(view.risk_reasons), estimated_monthly_savings=view.estimated_monthly_savings,
            verified_monthly_savings=view.actual_monthly_savings, reason=view.reason,
            planned_steps=list(ledger.plan),
            not_before=self._request.options.not_before,
        )

    async def _raise_alarm(self, notification: Notification) -> None:
        """Started and left running: the alarm outlives the failed execution (the execution
        waits only until it has started)."""
        with contextlib.suppress(WorkflowAlreadyStartedError):  # already ringing for this execution
            await workflow.start_child_workflow(
                RollbackAlarmWorkflow.run,
                AlarmInput(notification=notification, every=self._request.options.alarm_repeat),
                id=alarm_id(notification.subject_id),
                parent_close_policy=ParentClosePolicy.ABANDON,
                static_summary=f"alarm: the undo of {notification.resource_id} failed; acknowledge it",
            )


def observers_for(request: ExecutionRequest) -> list[Observer]:
    """Every observer of one execution, in the order their commands must keep (module docstring)."""
    return [PlanWaitingNotifier(request), SearchAttributes(), ReadModelRecorder(), PlanSettledNotifier(request),
            Notifier(request)]
