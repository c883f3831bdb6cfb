"""`reclaim savings`: estimated vs verified vs measured monthly savings per kind and account, from
the read model (the savings ledger and the `SavingsCheck` workflows' measurements)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from domain.savings import AccuracyLine, SavingsAccuracy, SavingsMeasurement
from starter.cli_common import _store, out, run
from starter.executions import ReclaimError

_DAYS = re.compile(r"^(\d{1,4})d$")


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """An ISO date or date-time (UTC unless it says otherwise), or `<N>d` for N days ago."""
    if value is None:
        return None
    text = value.strip()
    if match := _DAYS.match(text):
        return (now or datetime.now(UTC)) - timedelta(days=int(match.group(1)))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ReclaimError(f"--since {value!r}: expected a date (2026-11-01), a date-time or N days (30d)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def savings_command(
    customer: Annotated[str | None, typer.Option("--customer", help="One customer (default: every one).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Changes completed since: 2026-11-01, a date-time, "
                                                              "or 30d.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    details: Annotated[bool, typer.Option("--details", help="Also each measurement with its evidence.")] = False,
) -> None:
    """Savings checked: estimated vs verified vs measured per kind and account, accuracy and method."""
    async def go() -> tuple[SavingsAccuracy, list[SavingsMeasurement]]:
        from starter.api_client import api_configured

        since_at = parse_since(since)

        if api_configured():
            raise ReclaimError("savings reads the database; RECLAIM_API_URL is set: use GET /api/v1/metrics/summary "
                               "(its savings_accuracy)")
        customers = None if customer is None else [customer]
        async with _store() as store:
            table = await store.measurements.accuracy(customer_ids=customers, since=since_at, customer_id=customer)
            listed = await store.measurements.list(customer_ids=customers, since=since_at, limit=1000) \
                if details or as_json else []
        return table, listed

    table, measurements = run(go)
    if as_json:
        out.print_json(data=table.model_dump(mode="json") | {
            "measurements": [m.model_dump(mode="json") for m in measurements]})
        return
    out.print(accuracy_table(table))
    for m in measurements:
        shown = "not measured" if m.measured_monthly_savings is None else f"${m.measured_monthly_savings:,.2f}/mo"
        out.print(f"[bold]{m.execution_id}[/bold] {m.kind} {m.resource_id}: {shown} ({m.method.value}, "
                  f"{m.period_start:%Y-%m-%d}..{m.period_end:%Y-%m-%d})")
        for line in m.evidence:
            out.print(f"  - {line}", markup=False)


def accuracy_table(report: SavingsAccuracy) -> Table:
    title = "savings checked" + (f" for {report.customer_id}" if report.customer_id else "") + (
        f" since {report.since:%Y-%m-%d %H:%M} UTC" if report.since else "")
    table = Table("kind", "account", "changes", "measured", "estimated $/mo", "verified $/mo", "measured $/mo",
                  "accuracy", "method", title=title)
    for line in [*report.lines, report.total]:
        table.add_row(*_cells(line), end_section=line is report.lines[-1] if report.lines else False)
    return table


def _cells(line: AccuracyLine) -> list[str]:
    accuracy = "" if line.accuracy is None else f"{line.accuracy:.0%}"
    methods = ", ".join(f"{name} {n}" for name, n in sorted(line.methods.items()))
    changes = f"{line.executions}" + (f" ({line.reversed} rolled back)" if line.reversed else "")
    measured = f"${line.measured_monthly:,.2f} of ${line.estimated_measured_monthly:,.2f}" if line.measured else ""
    return [line.kind, line.account_id, changes, str(line.measured), f"${line.estimated_monthly:,.2f}",
            f"${line.verified_monthly:,.2f}", measured, accuracy, methods]
