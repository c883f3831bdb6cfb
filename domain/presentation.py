"""What the Temporal Web UI and `temporal workflow describe` show of an execution.

Temporal's user metadata: a static summary fixed at start (what is changed, where,
for whom, for how much) and current details rewritten at every status change (where
it stands, why, and for one awaiting a human exactly how to answer). Plain text and
Markdown only: no credentials ever reach them, only what the read model shows anyway.
"""

from __future__ import annotations

from domain.execution import ExecutionView
from domain.recommendation import Recommendation
from domain.status import ExecutionStatus

S = ExecutionStatus


def execution_summary(rec: Recommendation, dry_run: bool = False) -> str:
    """One line for the Web UI list: kind, resource, customer, savings."""
    prefix = "dry run: " if dry_run else ""
    return (f"{prefix}{rec.kind} {rec.resource_id} ({rec.account_id}/{rec.region}) for {rec.customer_id}, "
            f"${rec.estimated_monthly_savings:,.2f}/month")


def lease_summary(resource_id: str, holder: str) -> str:
    return f"internal: lease on {resource_id} held by {holder} (not an execution)"


def execution_details(view: ExecutionView) -> str:
    """The execution's current details, in Markdown."""
    lines = [f"**{view.status.value}**: {view.step}"]
    if view.reason and view.reason != view.step:
        lines.append(f"Reason: {view.reason}")
    if view.risk is not None:
        lines.append(f"Risk: {view.risk.value}")
    if view.status is S.AWAITING_APPROVAL:
        eid = view.execution_id
        lines += [
            "Needs a human: " + "; ".join(view.approval_reasons),
            f"Requested by {view.requested_by}; anyone else with the approver role may decide.",
            "Approve with one of:",
            f"- `reclaim approve {eid} --as <you> -m \"why\"` (or `reclaim reject {eid} --as <you> -m \"why\"`)",
            f"- `POST /api/v1/executions/{eid}/approve` with an approver's bearer token, body `{{\"comment\": \"why\"}}`",
            f"- `temporal workflow update execute --workflow-id {eid} --name approve "
            f"--input '{{\"actor\": \"<you>\", \"role\": \"approver\"}}'`",
        ]
    if view.status is S.COMPLETED and view.rollback_available_until is not None:
        lines.append(f"Can be rolled back until {view.rollback_available_until.isoformat()}: "
                     f"`reclaim rollback {view.execution_id} --as <you> -m \"why\"`")
    if view.actual_monthly_savings is not None:
        lines.append(f"Verified savings: ${view.actual_monthly_savings:,.2f}/month")
    # The Web UI reads `$...$` as math: escaped, dollars stay dollars.
    return "\n\n".join(lines).replace("$", "\\$")
