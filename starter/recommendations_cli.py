"""`reclaim recommendations list`: the stored recommendations with where they stand (NEW, STALE, or
their latest execution's status), by source and status, from the read model."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from starter.cli_common import _store, out, run
from starter.executions import ReclaimError
from store.repository import NEW, STALE, StoredRecommendation

recommendations_app = typer.Typer(no_args_is_help=True, help="Stored recommendations and where they stand.")


@recommendations_app.command("list")
def list_recommendations(
    source: Annotated[str | None, typer.Option("--source", help="reclaim-scan, cost-optimization-hub, "
                                                                "compute-optimizer, trusted-advisor, manual, ...")] = None,
    status: Annotated[str | None, typer.Option("--status", help=f"{NEW} (no execution yet, current), {STALE} (its "
                                                                "source no longer returns it) or an execution "
                                                                "status such as AWAITING_APPROVAL.")] = None,
    customer: Annotated[str | None, typer.Option("--customer")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List stored recommendations, newest first."""

    async def go() -> list[StoredRecommendation]:
        from starter.api_client import api_configured

        if api_configured():
            raise ReclaimError("recommendations list reads the database; RECLAIM_API_URL is set: use "
                               "GET /api/v1/recommendations")
        async with _store() as store:
            try:
                return await store.list_recommendations(customer_id=customer, status=status, limit=limit,
                                                        source=source)
            except ValueError:
                raise ReclaimError(f"--status {status!r}: expected {NEW}, {STALE} or an execution status") from None

    found = run(go)
    if as_json:
        out.print_json(data=[s.model_dump(mode="json") for s in found])
        return
    table = Table("id", "kind", "resource", "source", "status", "savings/mo", "finding")
    for s in found:
        r = s.recommendation
        shown = s.status if s.stale_at is None else (STALE if s.status == NEW else f"{s.status}, {STALE}")
        table.add_row(r.id, r.kind, r.resource_id, r.source, shown, f"${r.estimated_monthly_savings:,.2f}",
                      str(r.source_details.get("finding", "")))
    out.print(table)
    out.print(f"{len(found)} recommendation{'s' * (len(found) != 1)}")
