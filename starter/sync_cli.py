"""What `reclaim import --save` and `reclaim scan --save` share: keeping the read model current
(`Store.sync_recommendations`) and the counts a person reads: new, updated, unchanged, stale, held
by an execution; not executable by reason, invalid by field."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from domain.imports import not_executable_counts
from domain.sources import ImportReport
from domain.sync import SyncPlan, SyncScope
from starter.cli_common import _store, out
from starter.executions import ReclaimError


async def save_synced(report: ImportReport, scope: SyncScope, *, command: str) -> SyncPlan:
    """Keep the report's recommendations current in the read model (the API has no import route yet)."""
    from starter.api_client import api_configured

    if api_configured():
        raise ReclaimError(f"{command} --save writes the database; RECLAIM_API_URL is set and the API has no "
                           "import route yet")
    async with _store() as store:
        return await store.sync_recommendations(report.recommendations, scope)


def counts_json(report: ImportReport, plan: SyncPlan | None) -> dict[str, Any]:
    counts: dict[str, Any] = plan.counts.model_dump() if plan is not None else {"found": len(report.recommendations)}
    return counts | not_executable_counts(report)


def print_sync(plan: SyncPlan) -> None:
    c = plan.counts
    line = f"saved: {c.new} new, {c.updated} updated, {c.unchanged} unchanged, {c.stale} newly stale"
    if c.held:
        line += f", {c.held} left alone (an execution holds them)"
    if c.conflicts:
        line += f", {c.conflicts} left alone (the id is another customer's)"
    out.print(line)


def print_not_executable(report: ImportReport, first_column: str = "action") -> None:
    """What was found and cannot be executed (yet), by reason; then the invalid ones by field."""
    if report.not_executable:
        table = Table(first_column, "resource type", "count", "reason", title="not executable yet")
        for n in report.not_executable:
            table.add_row(n.action_type, n.resource_type, str(n.count), n.reason)
        out.print(table)
    print_invalid(report)


def print_invalid(report: ImportReport) -> None:
    invalid = not_executable_counts(report)["invalid"]
    if invalid:
        table = Table("field", "count", title="invalid, by field")
        for name, count in invalid.items():
            table.add_row(name, str(count))
        out.print(table)
