"""`reclaim import`: recommendations from Cost Optimization Hub, Compute Optimizer, Trusted Advisor
or their saved CLI output, mapped to kinds (domain/sources.py), printed as a report and, with
`--save`, kept in the read model beside the ones `reclaim execute` saves."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from activities.aws import SessionFactory
from activities.imports import default_region, gather_import, import_scope
from activities.sources import SourceError, SourceFilters
from domain.sources import COH, COMPUTE_OPTIMIZER, TRUSTED_ADVISOR, ImportContext, ImportReport
from domain.sync import SyncPlan, SyncScope
from runtime.settings import Settings
from starter.cli_common import out, run, state
from starter.executions import ReclaimError
from starter.sync_cli import counts_json, print_not_executable, print_sync, save_synced


class From(StrEnum):
    coh = "coh"
    compute_optimizer = "compute-optimizer"
    co = "co"
    trusted_advisor = "trusted-advisor"
    ta = "ta"
    file = "file"


#: --from -> the source's registered name (activities/sources); `file` reads a saved output instead.
LIVE = {From.coh: COH, From.compute_optimizer: COMPUTE_OPTIMIZER, From.co: COMPUTE_OPTIMIZER,
        From.trusted_advisor: TRUSTED_ADVISOR, From.ta: TRUSTED_ADVISOR}


def session_factory(settings: Settings) -> SessionFactory:
    """The worker's way to AWS (role per account when RECLAIM_ROLE_ARN_TEMPLATE is set); tests replace it."""
    return SessionFactory(role_arn_template=settings.role_arn_template, endpoint_url=settings.aws_endpoint_url)


def gather(origin: From, file: Path | None, filters: SourceFilters, ctx: ImportContext,
           settings: Settings) -> ImportReport:
    """The report of one import; ReclaimError (one line) for what a person must fix."""
    if origin is From.file and file is None:
        raise ReclaimError("--from file needs --file F (the saved output of the AWS CLI)")
    if origin is not From.file and settings.role_arn_template and not filters.account_ids:
        raise ReclaimError("RECLAIM_ROLE_ARN_TEMPLATE is set: name the --account to import from")
    try:
        return gather_import(session_factory(settings), LIVE.get(origin), file, filters, ctx, default_region())
    except SourceError as exc:
        raise ReclaimError(str(exc)) from None


def print_report(report: ImportReport, *, saved: bool, plan: SyncPlan | None = None) -> None:
    total = len(report.recommendations)
    where = "saved" if saved else "not saved; --save keeps them"
    out.print(f"{report.source}: {total} recommendation{'s' * (total != 1)} imported ({where}), "
              f"{report.not_executable_total} not executable yet")
    if report.recommendations:
        kinds = Table("kind", "count", "monthly savings", title="imported")
        for kind, count in report.imported_by_kind.items():
            savings = sum(r.estimated_monthly_savings for r in report.recommendations if r.kind == kind)
            kinds.add_row(kind, str(count), f"${savings:,.2f}")
        out.print(kinds)
    print_not_executable(report)
    if plan is not None:
        print_sync(plan)


def sync_scope(origin: From, report: ImportReport, filters: SourceFilters, customer: str) -> SyncScope:
    """What this import asked its source about (`activities.imports.import_scope`)."""
    return import_scope(LIVE.get(origin), report, filters, customer, default_region())


def _origin(source: From | None, option: From | None, file: Path | None) -> From:
    """`reclaim import coh` or `--from coh`; with --file, a source's saved output is a file import."""
    if source is not None and option is not None and source is not option:
        raise typer.BadParameter(f"{source.value} or --from {option.value}: say one source", param_hint="SOURCE")
    chosen = source or option
    if chosen is None:
        raise typer.BadParameter("say where: reclaim import coh|co|ta|file (or --from)", param_hint="SOURCE")
    return From.file if file is not None else chosen


def import_command(
    source: Annotated[From | None, typer.Argument(
        help="Where the recommendations are (or --from); with --file, that source's saved output.")] = None,
    origin: Annotated[From | None, typer.Option("--from", help="Where the recommendations are.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="The saved AWS CLI output "
                                                              "(cost-optimization-hub list-recommendations, "
                                                              "compute-optimizer get-*-recommendations).")] = None,
    account: Annotated[list[str] | None, typer.Option(
        "--account", "--accounts", help="Account id; repeat for several.")] = None,
    region: Annotated[list[str] | None, typer.Option(
        "--region", "--regions", help="Region; repeat for several.")] = None,
    customer: Annotated[str, typer.Option("--customer", help="Customer the recommendations belong to.")] = "default",
    save: Annotated[bool, typer.Option("--save", help="Keep them in the read model (same id: replaced).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Import recommendations and report what maps to a kind and what is not executable yet.

    Cost Optimization Hub and Trusted Advisor are read in us-east-1; Compute Optimizer in each
    --region (default: the AWS configuration's region).
    """
    settings = state.settings
    origin = _origin(source, origin, file)

    async def go() -> tuple[ImportReport, SyncPlan | None]:
        try:
            filters = SourceFilters(account_ids=account or [], regions=region or [])
            ctx = ImportContext(customer_id=customer)
        except ValidationError as exc:
            raise ReclaimError("; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors())) from None
        report = await asyncio.to_thread(gather, origin, file, filters, ctx, settings)
        plan = None
        if save:
            plan = await save_synced(report, sync_scope(origin, report, filters, customer), command="import")
        return report, plan

    report, plan = run(go)
    if as_json:
        out.print_json(data=report.model_dump(mode="json") | {"saved": save, "counts": counts_json(report, plan)})
    else:
        print_report(report, saved=save, plan=plan)
