"""`reclaim schedule ...`: imports and scans on a Temporal Schedule (visible in the Web UI's Schedules
page), each run an ImportWorkflow that keeps the read model current and, with `--plan dry-run`, opens a
dry-run plan of the NEW recommendations that waits for a person."""

from __future__ import annotations

import re
from contextlib import asynccontextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from domain.imports import ImportInput, ImportPlan, ImportSource
from domain.plan import Strategy
from runtime.temporal_client import connect
from starter.cli_common import AsUser, _store, acting, out, run, state
from starter.executions import ReclaimError
from starter.imports import NAME_PATTERN, Imports, ImportStatus, ScheduleView

schedule_app = typer.Typer(no_args_is_help=True, help="Imports and scans on a Temporal Schedule, optionally "
                                                      "opening a dry-run plan of what is NEW.")


class PlanMode(StrEnum):
    dry_run = "dry-run"


@asynccontextmanager
async def _imports() -> Any:
    try:
        client = await connect(state.settings)
    except RuntimeError as exc:
        raise ReclaimError(f"cannot reach Temporal at {state.settings.temporal_address} ({exc})") from None
    yield Imports(client, state.settings.task_queue)


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors())


async def _finished(imports: Imports, import_id: str) -> ImportStatus:
    """The import's end and, when it opened a plan, that plan once its dry run awaits approval (or ended)."""
    from starter.plans import Plans

    status = await imports.wait(import_id)
    if status.result is not None and status.result.plan_id is not None:
        async with _store() as store:
            await Plans(imports.client, imports.task_queue, store).wait(status.result.plan_id, timeout=3600)
    return status


def print_import(status: ImportStatus) -> None:
    if status.result is None:
        out.print(f"import {status.import_id}: {status.status}" + (f": {status.error}" if status.error else ""))
        return
    r, c = status.result, status.result.counts
    out.print(f"import {status.import_id}: {r.source} for {r.customer_id}: {r.found} found; {c.new} new, "
              f"{c.updated} updated, {c.unchanged} unchanged, {c.stale} newly stale, {c.held} held by an execution")
    for title, counted in (("not executable yet", c.unsupported), ("invalid, by field", c.invalid)):
        if counted:
            table = Table("reason" if title.startswith("not") else "field", "count", title=title)
            for key, n in counted.items():
                table.add_row(key, str(n))
            out.print(table)
    if r.plan_id:
        out.print(f"dry-run plan {r.plan_id}: {r.planned} NEW recommendations; it waits for approval: "
                  f"reclaim plan approve {r.plan_id} --as <approver>")
    elif r.plan_note:
        out.print(r.plan_note)


def print_schedules(views: list[ScheduleView]) -> None:
    table = Table("name", "source", "customer", "cron", "state", "plan", "next run", "last import")
    for v in views:
        plan = f"dry-run, max {v.input.plan.max_items}" if v.input.plan else "-"
        table.add_row(v.name, v.input.source.value, v.input.customer_id, v.cron, "paused" if v.paused else "active",
                      plan, f"{v.next_runs[0]:%Y-%m-%d %H:%M} UTC" if v.next_runs and not v.paused else "-",
                      (v.running or v.recent or ["-"])[-1])
    out.print(table)


@schedule_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Lower case letters, digits and dashes; up to 63.")],
    source: Annotated[ImportSource, typer.Option("--source", help="coh, co, ta, scan, or file (with --file).")],
    cron: Annotated[str, typer.Option("--cron", help='When, in UTC: "0 6 * * MON", or "@every 6h".')],
    customer: Annotated[str, typer.Option("--customer")] = "default",
    accounts: Annotated[list[str] | None, typer.Option("--accounts", "--account", help="Repeat for several.")] = None,
    regions: Annotated[list[str] | None, typer.Option("--regions", "--region", help="Repeat for several.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="With --source file: a path on the worker.")] = None,
    lookback_days: Annotated[int | None, typer.Option("--lookback-days", help="Scan only.")] = None,
    plan: Annotated[PlanMode | None, typer.Option("--plan", help="dry-run: open a dry-run plan of the NEW "
                                                                  "recommendations, waiting for approval.")] = None,
    max_items: Annotated[int, typer.Option("--max-items", help="With --plan: at most this many (largest "
                                                               "savings first).")] = 50,
    strategy: Annotated[Strategy, typer.Option("--strategy", case_sensitive=False)] = Strategy.PARALLEL,
    now: Annotated[bool, typer.Option("--now", help="Also run the first import at once.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="With --now: wait for it (and for its plan's dry run).")] = False,
    as_user: AsUser = None,
) -> None:
    """Create a schedule (a Temporal Schedule: see it in the Web UI's Schedules page)."""
    settings = acting(as_user)

    async def go() -> tuple[ScheduleView, ImportStatus | None]:
        if wait and not now:
            raise ReclaimError("--wait goes with --now (the first import at once)")
        try:
            req = ImportInput(source=source, customer_id=customer, account_ids=accounts or [], regions=regions or [],
                              file=str(file.resolve()) if file else None, lookback_days=lookback_days,
                              requested_by=settings.user, policy=settings.policy(),
                              plan=ImportPlan(max_items=max_items, strategy=strategy) if plan else None)
        except ValidationError as exc:
            raise ReclaimError(_problems(exc)) from None
        async with _imports() as imports:
            view = await imports.create_schedule(_name(name), req, cron, now=now)
            if not wait:
                return view, None
            first = await imports.triggered_import(view.name, [])
            return view, await _finished(imports, first)

    view, first = run(go)
    out.print(f"schedule {view.name} ({view.schedule_id}): {view.input.source.value} for {view.input.customer_id}, "
              f"{view.cron}" + (f"; next {view.next_runs[0]:%Y-%m-%d %H:%M} UTC" if view.next_runs else ""))
    if first is not None:
        print_import(first)
        if first.status != "COMPLETED":
            raise typer.Exit(4)


@schedule_app.command("list")
def list_schedules(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every import schedule: source, customer, cron, paused or not, next run, last import."""

    async def go() -> list[ScheduleView]:
        async with _imports() as imports:
            return await imports.list_schedules()

    views = run(go)
    if as_json:
        out.print_json(data=[v.model_dump(mode="json") for v in views])
    else:
        print_schedules(views)


@schedule_app.command("pause")
def pause(name: str, note: Annotated[str, typer.Option("--note")] = "") -> None:
    """Pause a schedule: nothing starts until `reclaim schedule resume`."""
    _set_paused(name, True, note)


@schedule_app.command("resume")
def resume(name: str, note: Annotated[str, typer.Option("--note")] = "") -> None:
    """Resume a paused schedule."""
    _set_paused(name, False, note)


def _set_paused(name: str, paused: bool, note: str) -> None:
    async def go() -> ScheduleView:
        async with _imports() as imports:
            return await imports.pause_schedule(_name(name), paused, note)

    view = run(go)
    out.print(f"schedule {view.name}: {'paused' if view.paused else 'active'}")


@schedule_app.command("trigger")
def trigger(
    name: str,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the import (and its plan's dry run).")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run the schedule's import now (after the running one, if one runs)."""

    async def go() -> tuple[str, ImportStatus | None]:
        async with _imports() as imports:
            before = await imports.describe_schedule(_name(name))
            await imports.trigger_schedule(before.name)
            started = await imports.triggered_import(before.name, [*before.recent, *before.running])
            return started, (await _finished(imports, started) if wait else None)

    started, status = run(go)
    if as_json:
        out.print_json(data={"import_id": started, **({"status": status.model_dump(mode="json")} if status else {})})
    elif status is None:
        out.print(f"import {started} started")
    else:
        print_import(status)
    if status is not None and status.status != "COMPLETED":
        raise typer.Exit(4)


@schedule_app.command("delete")
def delete(name: str) -> None:
    """Delete a schedule (imports it started, and their plans, go on)."""

    async def go() -> None:
        async with _imports() as imports:
            await imports.delete_schedule(_name(name))

    run(go)
    out.print(f"schedule {name} deleted")


def _name(name: str) -> str:
    if not re.match(NAME_PATTERN, name):
        raise ReclaimError(f"schedule name {name!r}: lower case letters, digits and dashes, up to 63, "
                           "starting with a letter or digit")
    return name
