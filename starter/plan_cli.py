"""`reclaim plan ...`: run many recommendations as one plan, steer it, watch it, report on it."""

from __future__ import annotations

import json
import sys
import time
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from domain.manual import AWAITING_CONFIRMATION, ManualDecision
from domain.plan import (
    PLAN_TERMINAL,
    WAITING_FOR_PEOPLE,
    PlanControl,
    PlanDecision,
    PlanSpec,
    PlanStatus,
    PlanView,
    Quota,
    Strategy,
    needs_person,
)
from domain.plan_report import render_markdown
from runtime.temporal_client import connect
from starter.cli_common import AsUser, _store, acting, err, out, run, state
from starter.executions import ReclaimError
from starter.polling import poll, polled

plan_app = typer.Typer(no_args_is_help=True, help="Run many recommendations as one plan: waves, rate control, "
                                                  "one approval.")


@asynccontextmanager
async def _plans() -> Any:
    from starter.plans import Plans

    try:
        client = await connect(state.settings)
    except RuntimeError as exc:
        raise ReclaimError(f"cannot reach Temporal at {state.settings.temporal_address} ({exc})") from None
    async with _store() as store:
        yield Plans(client, state.settings.task_queue, store, accounts=state.settings.accounts(),
                    signer=state.settings.approval_signer())


def read_plan(path: Path) -> PlanSpec:
    """A plan file (JSON or YAML): a plan object, or just a list of recommendations."""
    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text()
    except FileNotFoundError:
        raise ReclaimError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReclaimError(f"{path}: cannot read it ({exc})") from None
    try:
        raw = yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise ReclaimError(f"{path}: neither JSON nor YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(raw, list):
        raw = {"recommendations": raw}
    if not isinstance(raw, dict):
        raise ReclaimError(f"{path}: expected a plan object or a list of recommendations")
    try:
        return PlanSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])
        raise ReclaimError(f"{path}: invalid plan: {problems}") from None


def _quota(value: str | None, option: str) -> Quota | None:
    if value is None:
        return None
    try:
        return Quota.model_validate(value)
    except ValidationError:
        raise ReclaimError(f"{option}: expected a number or a percentage such as 10 or 25%, got {value!r}") from None


@plan_app.command("run")
def run_plan(
    file: Annotated[Path, typer.Argument(help="Plan file, JSON or YAML ('-' for stdin).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Dry-run every item, then wait for approval.")] = False,
    strategy: Annotated[Strategy | None, typer.Option("--strategy", case_sensitive=False)] = None,
    max_concurrency: Annotated[str | None, typer.Option("--max-concurrency", help="N or N% of a wave.")] = None,
    error_threshold: Annotated[str | None, typer.Option("--error-threshold", help="N or N% failed items.")] = None,
    ramp_up: Annotated[bool, typer.Option("--ramp-up", help="Start each wave 1, 2, 4, ... at a time.")] = False,
    plan_id: Annotated[str | None, typer.Option("--id", help="Plan id (default: a new one).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it ends or needs a person.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    as_user: AsUser = None,
) -> None:
    """Start a plan (the same --id again finds the running plan).

    With --wait: exit 0 once it COMPLETED; 3 when only a person can move it (its dry run awaits
    approval, it is paused, or every started item awaits an approval); 4 when it ended otherwise.
    """
    settings = acting(as_user)

    async def go() -> PlanView:
        spec = read_plan(file)
        updates: dict[str, Any] = {}
        if dry_run:
            updates["dry_run"] = True
        if plan_id:
            updates["id"] = plan_id
        rate = spec.rate.model_copy(update={k: v for k, v in {
            "max_concurrency": _quota(max_concurrency, "--max-concurrency"),
            "error_threshold": _quota(error_threshold, "--error-threshold"),
        }.items() if v is not None})
        if ramp_up:
            rate.ramp_up = True
        raw = {**spec.model_dump(), **updates, "rate": rate.model_dump()}
        if strategy is not None:
            raw["strategy"] = strategy
        try:
            spec = PlanSpec.model_validate(raw)
        except ValidationError as exc:
            raise ReclaimError("; ".join(e["msg"] for e in exc.errors())) from None
        async with _plans() as plans:
            view = await plans.submit(spec, requested_by=settings.user, policy=settings.policy())
            if not as_json:  # at once: a big plan can run for hours before --wait returns
                out.print(f"plan {view.plan_id}: {view.status.value}, {view.total} items in {len(view.waves)} "
                          "waves" + (" (dry run)" if view.dry_run else ""))
            if wait:
                view = await until_it_ends_or_needs_a_person(plans, view.plan_id, timeout=24 * 3600)
            return view

    view = run(go)
    if as_json:
        out.print_json(view.model_dump_json(exclude={"events"}))
    elif wait:
        out.print(progress_table(view))
    if wait:
        _exit_for(view)


#: `plan run --wait` and `plan watch` exit codes (as `reclaim execute --wait`): 0 COMPLETED,
#: 3 only a person can move it now, 4 it ended otherwise (COMPLETED_WITH_FAILURES, FAILED, ABORTED).
EXIT_NEEDS_PERSON, EXIT_OTHER_OUTCOME = 3, 4


async def until_it_ends_or_needs_a_person(plans: Any, plan_id: str, timeout: float,
                                          interval: float = 1.0) -> PlanView:
    view: PlanView = await poll(
        lambda: plans.progress(plan_id), _settled, interval=interval, timeout=timeout,
        too_long=lambda view: ReclaimError(f"plan {plan_id} is still {view.status.value} after {timeout:.0f} s"),
    )
    return view


def _settled(view: PlanView) -> bool:
    """Ended, or only a person can move it now."""
    return view.status in PLAN_TERMINAL or needs_person(view)


def _exit_for(view: PlanView) -> None:
    if view.status is PlanStatus.COMPLETED:
        return
    if view.status not in PLAN_TERMINAL and needs_person(view):
        confirming = view.counts.get(AWAITING_CONFIRMATION, 0)
        waiting = (f"{view.awaiting_person} items await approval" if view.status is PlanStatus.RUNNING
                   else f"the plan is {view.status.value}")
        if view.status is PlanStatus.RUNNING and confirming:
            waiting = (f"{view.awaiting_person} items await a person ({confirming} manual, "
                       f"`reclaim plan confirm|fail {view.plan_id} ITEM`)")
        err.print(f"needs a person: {waiting}")
        raise typer.Exit(EXIT_NEEDS_PERSON)
    raise typer.Exit(EXIT_OTHER_OUTCOME)


def _control(action: str, plan_id: str, reason: str, as_user: str | None) -> None:
    settings = acting(as_user)

    async def go() -> str:
        async with _plans() as plans:
            return await plans.control(plan_id, action, PlanControl(actor=settings.user, role=settings.role,
                                                                   reason=reason))

    out.print(run(go))


@plan_app.command()
def approve(
    plan_id: str,
    items: Annotated[str | None, typer.Option("--items", help="Only these recommendation ids (comma-separated).")] = None,
    comment: Annotated[str, typer.Option("--comment", "-m")] = "",
    as_user: AsUser = None,
) -> None:
    """Approve a dry-run plan's report: exactly its planned items (or the ones named) run."""
    settings = acting(as_user)
    chosen = [i.strip() for i in items.split(",") if i.strip()] if items is not None else None

    async def go() -> str:
        async with _plans() as plans:
            return await plans.decide(plan_id, True, PlanDecision(actor=settings.user, role=settings.role,
                                                                  comment=comment, items=chosen))

    out.print(run(go))


@plan_app.command()
def reject(
    plan_id: str,
    reason: Annotated[str, typer.Option("--reason", "-m")] = "",
    as_user: AsUser = None,
) -> None:
    """Reject a dry-run plan's report: nothing runs, the plan ends ABORTED."""
    settings = acting(as_user)

    async def go() -> str:
        async with _plans() as plans:
            return await plans.decide(plan_id, False, PlanDecision(actor=settings.user, role=settings.role,
                                                                   comment=reason))

    out.print(run(go))


def _answer(confirm: bool, plan_id: str, item: str, comment: str, evidence: str, as_user: str | None) -> None:
    settings = acting(as_user)

    async def go() -> str:
        async with _plans() as plans:
            return await plans.answer(plan_id, confirm, ManualDecision(
                item=item, actor=settings.user, role=settings.role, comment=comment, evidence=evidence))

    out.print(run(go))


Comment = Annotated[str, typer.Option("--comment", "-m", help="What you did or saw (kept in the history).")]
Evidence = Annotated[str, typer.Option("--evidence", "-e", help="A link or text that shows it (kept in the report).")]


@plan_app.command()
def confirm(plan_id: str, item: str, comment: Comment = "", evidence: Evidence = "", as_user: AsUser = None) -> None:
    """Confirm a waiting manual item: it is done (its role, or one above it)."""
    _answer(True, plan_id, item, comment, evidence, as_user)


@plan_app.command()
def fail(plan_id: str, item: str, comment: Comment = "", evidence: Evidence = "", as_user: AsUser = None) -> None:
    """Fail a waiting manual item: a failed item (error threshold; the waves behind it are skipped)."""
    _answer(False, plan_id, item, comment, evidence, as_user)


@plan_app.command()
def pause(plan_id: str, reason: Annotated[str, typer.Option("--reason", "-m")] = "", as_user: AsUser = None) -> None:
    """Start no new item until resumed (running items finish)."""
    _control("pause", plan_id, reason, as_user)


@plan_app.command()
def resume(plan_id: str, reason: Annotated[str, typer.Option("--reason", "-m")] = "", as_user: AsUser = None) -> None:
    """Go on after a pause or a reached error threshold (failures count afresh)."""
    _control("resume", plan_id, reason, as_user)


@plan_app.command()
def abort(plan_id: str, reason: Annotated[str, typer.Option("--reason", "-m")] = "", as_user: AsUser = None) -> None:
    """Stop the plan: nothing new starts; running items are cancelled and undo what they changed."""
    _control("abort", plan_id, reason, as_user)


@plan_app.command()
def status(plan_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a plan's progress once: counts per wave and status."""

    async def go() -> PlanView:
        async with _plans() as plans:
            return await plans.progress(plan_id)

    view = run(go)
    if as_json:
        out.print_json(view.model_dump_json())
        return
    out.print(progress_table(view))


@plan_app.command()
def watch(
    plan_id: str,
    interval: Annotated[float, typer.Option("--interval", min=0.2, help="Seconds between refreshes.")] = 1.0,
    until_settled: Annotated[bool, typer.Option("--exit/--no-exit",
                                                help="Exit when the plan ends or needs a person.")] = True,
) -> None:
    """Live progress per wave until the plan ends (or only a person can move it).

    Exit codes as `plan run --wait`: 0 COMPLETED, 3 needs a person, 4 ended otherwise.
    """

    def done(view: PlanView) -> bool:
        return view.status in PLAN_TERMINAL or (until_settled and needs_person(view))

    async def go() -> PlanView:
        async with _plans() as plans:
            with Live(console=out, refresh_per_second=4, transient=False) as live:
                async with aclosing(polled(lambda: plans.progress(plan_id), interval=interval)) as views:
                    async for view in views:
                        live.update(progress_table(view))
                        if done(view):
                            return view
        raise AssertionError("unreachable: polled() never ends by itself")  # pragma: no cover

    _exit_for(run(go))


@plan_app.command()
def report(
    plan_id: str,
    format_: Annotated[str, typer.Option("--format", help="md or json.")] = "md",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """The plan's report: every item, estimated vs verified savings, failures, rollbacks."""
    async def go() -> str:
        if format_ not in ("md", "json"):
            raise ReclaimError(f"--format: expected md or json, got {format_!r}")
        async with _plans() as plans:
            built = await plans.report(plan_id)
        return render_markdown(built) if format_ == "md" else json.dumps(built.model_dump(mode="json"), indent=2)

    text = run(go)
    if output is not None:
        output.write_text(text)
        out.print(f"report written to {output}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@plan_app.command("list")
def list_plans(
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Plans from the read model, newest first."""

    async def go() -> list[PlanView]:
        async with _store() as store:
            return await store.plans.list_plans(limit=limit)

    views = run(go)
    if as_json:
        out.print_json(data=[v.model_dump(mode="json", exclude={"events"}) for v in views])
        return
    table = Table("plan", "status", "items", "waves", "requested by", "started")
    for v in views:
        table.add_row(v.plan_id, v.status.value, str(v.total), str(len(v.waves)), v.requested_by,
                      v.started_at.strftime("%Y-%m-%d %H:%M"))
    out.print(table)


def progress_table(view: PlanView) -> RenderableType:
    """Counts per wave, then the accounts whose items are held, then every waiting manual item
    with its instructions."""
    waiting = [m for m in view.manual if m.status == AWAITING_CONFIRMATION]
    if not waiting and not view.held:
        return _waves_table(view)
    parts: list[RenderableType] = [_waves_table(view)]
    for held in view.held:
        parts.append(Text(f"account {held.account_id}: {len(held.positions)} items held since "
                          f"{held.since:%Y-%m-%d %H:%M:%S} UTC: {held.reason}"))
    for step in waiting:
        deadline = f", by {step.deadline:%Y-%m-%d %H:%M:%S} UTC" if step.deadline else ""
        parts.append(f"[bold]manual item {step.id}[/bold] waits for {step.role.value}{deadline}: "
                     f"reclaim plan confirm|fail {view.plan_id} {step.id}")
        parts.append(Markdown(step.instructions))
    return Group(*parts)


def _waves_table(view: PlanView) -> Table:
    unsettled = ("RUNNING", "HELD", *WAITING_FOR_PEOPLE)
    title = (f"plan {view.plan_id}  [bold]{view.status.value}[/bold]  {view.phase}  "
             f"{sum(n for s, n in view.counts.items() if s not in unsettled)}/{view.total + view.not_approved} "
             f"settled, {view.running} running" + (f" ({view.awaiting_person} awaiting approval)"
                                                    if view.awaiting_person else "")
             + f"  {time.strftime('%H:%M:%S')}")
    table = Table("#", "wave", "mode", "state", "items", "statuses", title=title, caption=view.reason or "")
    for wave in view.waves:
        counts = ", ".join(f"{s} {n}" for s, n in sorted(wave.counts.items()))
        table.add_row(str(wave.index + 1), wave.name, wave.mode.value, wave.state.value, str(wave.size), counts)
    return table

