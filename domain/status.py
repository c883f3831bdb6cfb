"""The execution state machine of DESIGN.md, as data.

The workflow asks `can_transition` before every status change, so an impossible
transition is a bug that fails loudly instead of a silently wrong audit trail.
"""

from enum import StrEnum


class ExecutionStatus(StrEnum):
    PENDING = "PENDING"
    VALIDATING = "VALIDATING"
    REJECTED_BY_VALIDATION = "REJECTED_BY_VALIDATION"
    PLANNED = "PLANNED"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    SCHEDULED = "SCHEDULED"
    BACKING_UP = "BACKING_UP"
    APPLYING = "APPLYING"
    VERIFYING = "VERIFYING"
    COMPLETED = "COMPLETED"
    ROLLING_BACK = "ROLLING_BACK"
    ROLLED_BACK = "ROLLED_BACK"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


S = ExecutionStatus

_TRANSITIONS: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    S.PENDING: frozenset({S.VALIDATING, S.CANCELLED}),
    S.VALIDATING: frozenset(
        {S.REJECTED_BY_VALIDATION, S.PLANNED, S.AWAITING_APPROVAL, S.SCHEDULED, S.BACKING_UP,
         S.CANCELLED, S.FAILED}
    ),
    # FAILED: a look at the live resource that cannot be made (access denied, say) before any change.
    S.AWAITING_APPROVAL: frozenset(
        {S.REJECTED, S.EXPIRED, S.SCHEDULED, S.BACKING_UP, S.CANCELLED, S.REJECTED_BY_VALIDATION, S.FAILED}
    ),
    # A resource that became riskier while waiting for its window needs a human after all.
    S.SCHEDULED: frozenset({S.BACKING_UP, S.AWAITING_APPROVAL, S.CANCELLED, S.REJECTED_BY_VALIDATION, S.FAILED}),
    S.BACKING_UP: frozenset({S.APPLYING, S.ROLLING_BACK, S.CANCELLED, S.FAILED}),
    S.APPLYING: frozenset({S.VERIFYING, S.ROLLING_BACK}),
    S.VERIFYING: frozenset({S.COMPLETED, S.ROLLING_BACK}),
    # A finished change stays open for the rollback window; a rollback on request
    # goes through ROLLING_BACK again.
    S.COMPLETED: frozenset({S.ROLLING_BACK}),
    S.ROLLING_BACK: frozenset({S.ROLLED_BACK, S.ROLLBACK_FAILED, S.CANCELLED}),
}

TERMINAL: frozenset[ExecutionStatus] = frozenset(
    {S.REJECTED_BY_VALIDATION, S.PLANNED, S.REJECTED, S.EXPIRED, S.ROLLED_BACK,
     S.ROLLBACK_FAILED, S.CANCELLED, S.FAILED}
)
"""States after which nothing more happens. COMPLETED is not here: it can still roll back."""

#: States in which the resource may be mid-change; the per-resource lease is held.
ACTIVE: frozenset[ExecutionStatus] = frozenset(
    {S.PENDING, S.VALIDATING, S.AWAITING_APPROVAL, S.SCHEDULED, S.BACKING_UP, S.APPLYING,
     S.VERIFYING, S.ROLLING_BACK}
)

_PROGRESS: dict[ExecutionStatus, int] = {
    S.PENDING: 0,
    S.VALIDATING: 10,
    S.AWAITING_APPROVAL: 25,
    S.SCHEDULED: 30,
    S.BACKING_UP: 40,
    S.APPLYING: 60,
    S.VERIFYING: 80,
    S.ROLLING_BACK: 90,
}


def can_transition(current: ExecutionStatus, new: ExecutionStatus) -> bool:
    return new in _TRANSITIONS.get(current, frozenset())


def progress_percent(status: ExecutionStatus) -> int:
    """A coarse percentage for dashboards: 100 once nothing more will happen to the resource."""
    return _PROGRESS.get(status, 100)
