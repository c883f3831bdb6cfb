"""`reclaim scan`: Reclaim's own scanner (activities/sources/scanner.py, judged by domain/scan.py)
over accounts and regions; prints what it found with evidence and savings, what is protected, what
it could not judge, and with `--save` keeps the recommendations current in the read model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from activities.sources import SourceError
from activities.sources.scanner import ScanRequest, scan
from domain.recommendation import Recommendation
from domain.scan import SCANNER, ScanReport, Thresholds
from domain.sync import SyncPlan, SyncScope
from runtime.settings import Settings
from starter.cli_common import out, run, state
from starter.executions import ReclaimError
from starter.import_cli import default_region, session_factory
from starter.sync_cli import counts_json, print_not_executable, print_sync, save_synced

#: The scanner's clock: every age and look-back is measured on it (tests move it).
clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def thresholds_from(lookback_days: int | None, pairs: list[str]) -> Thresholds:
    """`--threshold name=value` pairs over the defaults; ReclaimError naming a bad one."""
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name.strip() not in Thresholds.model_fields:
            raise ReclaimError(f"--threshold {pair!r}: expected NAME=VALUE, NAME one of "
                               f"{', '.join(sorted(Thresholds.model_fields))}")
        values[name.strip()] = value.strip()
    if lookback_days is not None:
        values["lookback_days"] = lookback_days
    try:
        return Thresholds.model_validate(values)
    except ValidationError as exc:
        raise ReclaimError("; ".join(f"--threshold {e['loc'][0]}: {e['msg']}" for e in exc.errors())) from None


def gather(request: ScanRequest, settings: Settings) -> ScanReport:
    from activities.actions.base import registry

    if settings.role_arn_template and not request.account_ids:
        raise ReclaimError("RECLAIM_ROLE_ARN_TEMPLATE is set: name the --account to scan")
    try:
        return scan(session_factory(settings), request, settings.policy(), list(registry()), now=clock())
    except SourceError as exc:
        raise ReclaimError(str(exc)) from None


def evidence_line(rec: Recommendation) -> str:
    """The evidence in one short line: sizes, ages, the highest day of each metric."""
    parts = []
    for key, value in (rec.source_details.get("evidence") or {}).items():
        if isinstance(value, dict) and "max" in value:
            parts.append(f"{key} max {value['max']:g} over {value.get('days')} d")
        elif key in ("size_gib", "volume_size_gib", "age_days", "volume_type", "instance_type", "instance_class",
                     "stored_bytes", "standard_bytes", "public_ip", "retention_days") and value is not None:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def print_scan(result: ScanReport, plan: SyncPlan | None) -> None:
    report = result.report
    total, examined = len(report.recommendations), sum(result.examined.values())
    savings = sum(r.estimated_monthly_savings for r in report.recommendations)
    out.print(f"{SCANNER}: {examined} resources examined; {total} recommendation{'s' * (total != 1)} "
              f"(${savings:,.2f}/month), {report.not_executable_total} found but not executable yet, "
              f"{len(result.protected)} protected")
    if report.recommendations:
        table = Table("kind", "account", "region", "resource", "finding", "savings/mo", "evidence", title="found")
        for r in sorted(report.recommendations, key=lambda r: (r.kind, r.account_id, r.region, r.resource_id)):
            table.add_row(r.kind, r.account_id, r.region, r.resource_id, str(r.source_details.get("finding", "")),
                          f"${r.estimated_monthly_savings:,.2f}", evidence_line(r))
        out.print(table)
    print_not_executable(report, "finding")
    if result.protected:
        table = Table("resource type", "resource", "finding", "why", title="protected: reported, not recommended")
        for p in result.protected:
            table.add_row(p.resource_type, p.resource_id, p.finding, p.why)
        out.print(table)
    if result.passed_over:
        table = Table("resource type", "count", "reason", title="passed over: could not be judged")
        for passed in result.passed_over:
            table.add_row(passed.resource_type, str(passed.count), passed.reason)
        out.print(table)
    if plan is not None:
        print_sync(plan)
        if not result.complete:
            out.print("nothing marked stale: part of the scan was refused (see passed over)")
    else:
        out.print("not saved; --save keeps them")


def scan_command(
    account: Annotated[list[str] | None, typer.Option("--account", "--accounts",
                                                       help="Account id; repeat for several (default: the "
                                                            "credentials' own).")] = None,
    region: Annotated[list[str] | None, typer.Option("--region", "--regions",
                                                      help="Region; repeat for several (default: the AWS "
                                                           "configuration's region).")] = None,
    lookback_days: Annotated[int | None, typer.Option("--lookback-days", min=1, max=455,
                                                      help="CloudWatch look-back (default 14).")] = None,
    threshold: Annotated[list[str] | None, typer.Option("--threshold", help="NAME=VALUE over the defaults, e.g. "
                                                         "cpu_idle_percent=2; repeat for several.")] = None,
    customer: Annotated[str, typer.Option("--customer", help="Customer the recommendations belong to.")] = "default",
    save: Annotated[bool, typer.Option("--save", help="Keep them current in the read model: same id updated "
                                                      "in place, ones no longer found marked stale.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Find waste: unattached, gp2 and old volumes' snapshots, idle instances and DB instances,
    unassociated Elastic IPs, never-expiring log groups, buckets without lifecycle rules, provisioned
    DynamoDB tables far under capacity. Protected and production resources are reported, not recommended."""
    settings = state.settings

    async def go() -> tuple[ScanReport, SyncPlan | None]:
        regions = region or [r for r in [default_region()] if r]
        if not regions:
            raise ReclaimError("name a --region (no region in the AWS configuration)")
        try:
            request = ScanRequest(customer_id=customer, account_ids=account or [], regions=regions,
                                  thresholds=thresholds_from(lookback_days, threshold or []))
        except ValidationError as exc:
            raise ReclaimError("; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors())) from None
        result = await asyncio.to_thread(gather, request, settings)
        plan = None
        if save:
            scope = SyncScope(source=SCANNER, customer_id=customer, account_ids=result.accounts,
                              regions=result.regions, complete=result.complete)
            plan = await save_synced(result.report, scope, command="scan")
        return result, plan

    result, plan = run(go)
    if as_json:
        out.print_json(data=result.model_dump(mode="json") | {"saved": save, "counts": counts_json(result.report, plan),
                                                              "protected_counts": [
                                                                  c.model_dump() for c in result.protected_counts]})
    else:
        print_scan(result, plan)
