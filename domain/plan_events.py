"""What people are told of a plan (pure): the notification of each of its moments.

A plan tells when its dry run awaits approval, when it pauses at its error threshold,
and when it finishes (with its report's summary: status, why, counts, savings). It is
routed like an execution's notification: by its customer (a plan of several customers
names none, so only rules without a `customers` filter match it), its event and its
severity; a plan has no account, kind or risk of its own.
"""

from __future__ import annotations

from datetime import datetime

from domain.notifications import DEFAULT_SEVERITY, Notification, NotificationEvent, Severity, Subject
from domain.plan import PlanStatus, PlanView

#: How a finished plan's notification ranks: a plan that failed reads as an error.
FINISHED_SEVERITY: dict[PlanStatus, Severity] = {
    PlanStatus.COMPLETED: Severity.INFO,
    PlanStatus.COMPLETED_WITH_FAILURES: Severity.WARNING,
    PlanStatus.ABORTED: Severity.WARNING,
    PlanStatus.FAILED: Severity.ERROR,
}
MAX_REASON = 4000


def summary(view: PlanView) -> str:
    """One paragraph of the report: status and why, the counts, the savings."""
    counts = ", ".join(f"{n} {status}" for status, n in sorted(view.counts.items())) or "no item"
    parts = [f"{view.status.value}: {view.reason}" if view.reason else view.status.value,
             f"{view.total} items ({counts})"]
    if view.not_approved:
        parts.append(f"{view.not_approved} left out of the approved dry run")
    if view.held:
        parts.append("held: " + "; ".join(f"{len(h.positions)} in account {h.account_id} ({h.reason})"
                                          for h in view.held))
    text = ". ".join(parts)
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 1] + "…"


def plan_notification(view: PlanView, event: NotificationEvent, sequence: int, at: datetime) -> Notification:
    """The notification of `event` for the plan as `view` shows it now."""
    severity = FINISHED_SEVERITY.get(view.status, Severity.INFO) if event is NotificationEvent.PLAN_FINISHED \
        else DEFAULT_SEVERITY[event]
    finished = event is NotificationEvent.PLAN_FINISHED
    return Notification(
        event=event, subject=Subject.PLAN, subject_id=view.plan_id, sequence=sequence, at=at, severity=severity,
        customer_id=view.customer_ids[0] if len(view.customer_ids) == 1 else None,
        estimated_monthly_savings=view.estimated_monthly_savings,
        verified_monthly_savings=view.actual_monthly_savings if finished else None,
        reason=summary(view),
    )
