"""How an execution's end reads to a person, to Temporal and to the plan that started it.

Decided by types, never by message text: a failure whose message happens to say
"cancelled" is still a failure.

Temporal's own status of a closed execution (shown by the Web UI list and
`temporal workflow list`) tells the outcomes apart:

| read model            | Temporal    | failure type       |
|-----------------------|-------------|--------------------|
| COMPLETED, PLANNED, REJECTED, EXPIRED, REJECTED_BY_VALIDATION, ROLLED_BACK on request | Completed | |
| ROLLED_BACK after a failed change | Failed | ChangeRolledBack |
| FAILED                | Failed      | ExecutionFailed    |
| ROLLBACK_FAILED       | Failed      | RollbackFailed     |
| CANCELLED             | Canceled    |                    |

A refusal (by policy or by a person) is an answer, not a failure; a change that
failed and was undone is a failure even though nothing is left changed, so it
must not wear the same green badge as a good change.
"""

from __future__ import annotations

import asyncio

from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    FailureError,
)

from domain.execution import ExecutionView
from domain.status import ExecutionStatus

S = ExecutionStatus

ROLLBACK_FAILED = "RollbackFailed"
EXECUTION_FAILED = "ExecutionFailed"
CHANGE_ROLLED_BACK = "ChangeRolledBack"

#: Failure type of a closed execution -> its read-model status.
_STATUS_OF_FAILURE = {ROLLBACK_FAILED: S.ROLLBACK_FAILED, EXECUTION_FAILED: S.FAILED, CHANGE_ROLLED_BACK: S.ROLLED_BACK}


def describe_error(error: BaseException) -> str:
    """The innermost useful message, with the AWS error code when there is one."""
    cause: BaseException | None = error
    while isinstance(cause, (ActivityError, ChildWorkflowError)) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError) and cause.type:
        return f"{cause.type}: {cause.message}"
    if isinstance(cause, FailureError):
        return cause.message
    return str(cause) or type(cause).__name__


def closing_failure(view: ExecutionView, *, rollback_requested: bool) -> ApplicationError | None:
    """The typed failure an execution closes with, or None when it closes as completed (or cancelled)."""
    if view.status is S.ROLLBACK_FAILED:
        return ApplicationError(f"rollback failed: {view.reason}", type=ROLLBACK_FAILED, non_retryable=True)
    if view.status is S.FAILED:
        return ApplicationError(f"execution failed: {view.reason}", type=EXECUTION_FAILED, non_retryable=True)
    if view.status is S.ROLLED_BACK and not rollback_requested:
        return ApplicationError(f"the change failed and was undone: {view.reason}", type=CHANGE_ROLLED_BACK,
                                non_retryable=True)
    return None


def child_outcome(error: BaseException) -> ExecutionStatus:
    """The status of a child execution that ended with `error` (when its own word never arrived)."""
    if isinstance(error, asyncio.CancelledError):
        return S.CANCELLED
    cause = error.cause if isinstance(error, ChildWorkflowError) else error
    if isinstance(cause, CancelledError):
        return S.CANCELLED
    if isinstance(cause, ApplicationError) and cause.type in _STATUS_OF_FAILURE:
        return _STATUS_OF_FAILURE[cause.type]
    return S.FAILED


def refuse_update(refusal: str | None) -> None:
    """An update's validator says no: the attempt never enters the history, and the caller
    gets the reason as a `Refused` failure."""
    if refusal:
        raise ApplicationError(refusal, type="Refused", non_retryable=True)
