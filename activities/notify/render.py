"""How a notification reads to a person: a title and its facts, shared by Slack, Teams, e-mail and SNS."""

from __future__ import annotations

import html

from domain.notifications import Notification, NotificationEvent, Subject

_TITLES: dict[NotificationEvent, str] = {
    NotificationEvent.APPROVAL_REQUESTED: "Approval requested",
    NotificationEvent.APPROVAL_REMINDER: "Reminder: approval still needed",
    NotificationEvent.APPROVED: "Approved",
    NotificationEvent.REJECTED: "Rejected",
    NotificationEvent.EXPIRED: "Approval expired",
    NotificationEvent.COMPLETED: "Completed",
    NotificationEvent.ROLLED_BACK: "Rolled back",
    NotificationEvent.FAILED: "Failed",
    NotificationEvent.ROLLBACK_FAILED: "ALARM: rollback failed",
    NotificationEvent.PLAN_AWAITING_APPROVAL: "Plan awaits approval of its dry run",
    NotificationEvent.PLAN_PAUSED: "Plan paused at its error threshold",
    NotificationEvent.PLAN_FINISHED: "Plan finished",
    NotificationEvent.OWNER_WARNING: "Heads-up: a change to your resource is scheduled",
}


def title(n: Notification) -> str:
    what = f"{n.kind} {n.resource_id}" if n.kind and n.resource_id else n.subject_id
    if n.subject is Subject.PLAN:
        what = f"plan {n.subject_id}"
    return f"[reclaim] {_TITLES[n.event]}: {what}"


def facts(n: Notification) -> list[tuple[str, str]]:
    """(label, value) pairs, only those the notification has."""
    rows: list[tuple[str, str | None]] = [
        (n.subject.value.capitalize(), n.subject_id),
        ("Customer", n.customer_id),
        ("Account", f"{n.account_id} {n.region or ''}".strip() if n.account_id else None),
        ("Change", n.kind),
        ("Resource", n.resource_id),
        ("Risk", f"{n.risk.value} ({'; '.join(n.risk_reasons)})" if n.risk and n.risk_reasons else n.risk),
        ("Estimated savings", f"${n.estimated_monthly_savings:,.2f}/month"
         if n.estimated_monthly_savings is not None else None),
        ("Verified savings", f"${n.verified_monthly_savings:,.2f}/month"
         if n.verified_monthly_savings is not None else None),
        ("Scheduled for", n.not_before.isoformat() if n.not_before else None),
        ("Reason", n.reason),
        ("Severity", n.severity.value),
    ]
    return [(label, str(value)) for label, value in rows if value]


def text(n: Notification) -> str:
    lines = [title(n), "", *(f"{label}: {value}" for label, value in facts(n))]
    if n.planned_steps:
        lines += ["", "Planned steps:", *(f"  {i}. {step}" for i, step in enumerate(n.planned_steps, 1))]
    if n.links.approval_page and n.asks_decision:
        lines += ["", f"Approve or reject: {n.links.approval_page}"]
    if n.links.approval_page and n.event is NotificationEvent.PLAN_AWAITING_APPROVAL:
        lines += ["", f"Review the dry run: {n.links.approval_page}"]
    if n.links.report:
        lines += [f"Report: {n.links.report}"]
    if n.links.web_ui:
        lines += [f"Web UI: {n.links.web_ui}"]
    return "\n".join(lines) + "\n"


def to_html(n: Notification) -> str:
    e = html.escape
    rows = "".join(f"<tr><th align='left'>{e(label)}</th><td>{e(value)}</td></tr>" for label, value in facts(n))
    steps = "".join(f"<li>{e(step)}</li>" for step in n.planned_steps)
    links = []
    if n.links.approval_page and n.asks_decision:
        links.append(f"<a href='{e(n.links.approval_page)}'>Approve or reject</a>")
    if n.links.report:
        links.append(f"<a href='{e(n.links.report)}'>Report</a>")
    if n.links.web_ui:
        links.append(f"<a href='{e(n.links.web_ui)}'>Web UI</a>")
    return (f"<html><body><h2>{e(title(n))}</h2><table>{rows}</table>"
            + (f"<p>Planned steps:</p><ol>{steps}</ol>" if steps else "")
            + (f"<p>{' | '.join(links)}</p>" if links else "") + "</body></html>")
