"""`reclaim`: launch and steer executions from a terminal.

Every command fails with one clear line and a non-zero exit, never a traceback,
and leaves the interpreter cleanly (sdk-python#300).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from domain.execution import ApprovalInput, ExecutionOptions, ExecutionRequest, ExecutionView, RollbackInput
from domain.notifications import Acknowledgement
from domain.policy import Role
from domain.recommendation import Recommendation
from domain.status import ExecutionStatus
from runtime import logmask
from runtime.settings import Settings
from starter.accounts_cli import accounts_app, iam_app
from starter.cli_common import AsUser, _executions, acting, err, out, run, state
from starter.executions import SETTLED, InvalidCursor, ReclaimError
from starter.import_cli import import_command
from starter.notify_cli import notify_app
from starter.plan_cli import plan_app
from starter.recommendations_cli import recommendations_app
from starter.savings_cli import savings_command
from starter.scan_cli import scan_command
from starter.schedule_cli import schedule_app
from starter.windows_cli import windows_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Safely act on AWS cost recommendations.")
@app.callback()
def _global(
    as_user: Annotated[str | None, typer.Option("--as", help="Who is acting (default: RECLAIM_USER or your login).")] = None,
) -> None:
    settings = Settings()
    logmask.install()  # every process: no secret in a log line
    if settings.log_level:
        logmask.configure(settings.log_level)
    if as_user:
        settings.user = as_user
    state.settings = settings


# ---- launching -------------------------------------------------------------------------------


def _read_recommendations(path: Path) -> list[Recommendation]:
    try:
        raw = json.loads(Path(path).read_text()) if str(path) != "-" else json.load(sys.stdin)
    except FileNotFoundError:
        raise ReclaimError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ReclaimError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    items = raw if isinstance(raw, list) else [raw]
    recs = []
    for index, item in enumerate(items):
        try:
            recs.append(Recommendation.model_validate(item))
        except ValidationError as exc:
            where = f"{path}[{index}]" if isinstance(raw, list) else str(path)
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())
            raise ReclaimError(f"{where}: invalid recommendation: {problems}") from None
    return recs


@app.command()
def execute(
    file: Annotated[Path, typer.Argument(help="JSON file with one recommendation or a list ('-' for stdin).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and check permissions; change nothing.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until each execution settles.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    no_auto_approve: Annotated[bool, typer.Option("--no-auto-approve", help="Always ask a human.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Execute even a stale recommendation (its source no "
                                                        "longer returned it at the last import or scan).")] = False,
    as_user: AsUser = None,
) -> None:
    """Execute recommendations (a duplicate returns the existing execution).

    Exit codes with --wait: 0 every execution reached the outcome asked for (COMPLETED, or
    PLANNED for --dry-run); 3 some wait for a person (AWAITING_APPROVAL) and none ended
    otherwise; 4 some ended another way (refused, rejected, failed, rolled back, ...).
    Without --wait: 0 once all are started. Always 1 for bad input or an unreachable service.
    """
    settings = acting(as_user)

    async def go() -> list[dict[str, Any]]:
        from starter.executions import check_recommendation

        recs = _read_recommendations(file)
        for rec in recs:
            check_recommendation(rec)
        results = []
        async with _executions() as executions:
            await executions.save_recommendations(recs)
            for rec in recs:
                req = ExecutionRequest(
                    recommendation=rec,
                    requested_by=settings.user,
                    policy=settings.policy(),
                    options=ExecutionOptions(dry_run=dry_run, auto_approve=not no_auto_approve),
                )
                started = await executions.start(req, force=force)
                row: dict[str, Any] = {"execution_id": started.execution_id, "created": started.created}
                if wait:
                    view = await executions.wait(started.execution_id)
                    row |= {"status": view.status.value, "reason": view.reason}
                results.append(row)
        return results

    results = run(go)
    if as_json:
        out.print_json(data=results)
    else:
        for row in results:
            verb = "started" if row["created"] else "already exists:"
            line = f"{verb} {row['execution_id']}"
            if "status" in row:
                line += f"  {row['status']}" + (f"  ({row['reason']})" if row.get("reason") else "")
            out.print(line)
    if wait:
        code = wait_exit_code([ExecutionStatus(row["status"]) for row in results], dry_run=dry_run)
        if code:
            raise typer.Exit(code)


#: `reclaim execute --wait` exit codes beyond 0 (see its --help).
EXIT_AWAITING_PERSON = 3
EXIT_OTHER_OUTCOME = 4


def wait_exit_code(statuses: list[ExecutionStatus], *, dry_run: bool) -> int:
    """0 when every execution reached the outcome asked for; else which way they missed it."""
    wanted = ExecutionStatus.PLANNED if dry_run else ExecutionStatus.COMPLETED
    if any(s not in (wanted, ExecutionStatus.AWAITING_APPROVAL) for s in statuses):
        return EXIT_OTHER_OUTCOME
    if any(s is ExecutionStatus.AWAITING_APPROVAL for s in statuses):
        return EXIT_AWAITING_PERSON
    return 0


# ---- steering --------------------------------------------------------------------------------


#: What `approve --wait` waits for: the change's outcome, or a maintenance/change window to wait for.
AFTER_APPROVAL = (SETTLED - {ExecutionStatus.AWAITING_APPROVAL}) | {ExecutionStatus.SCHEDULED}


def _decide(execution_id: str, approve: bool, comment: str, as_user: str | None, wait: bool = False) -> None:
    settings = acting(as_user)
    attempt = ApprovalInput(actor=settings.user, role=settings.role, comment=comment)

    async def go() -> tuple[str, ExecutionStatus | None]:
        async with _executions() as executions:
            record = await executions.decide(execution_id, approve, attempt)  # a refusal is recorded there
            verb = "approved" if approve else "rejected"
            line = f"{verb} {execution_id} as {record.actor}"
            if not wait:
                return line, None
            # Not AWAITING_APPROVAL again: the run may not have moved on yet when the update returns.
            view = await executions.wait(execution_id, until=AFTER_APPROVAL)
            return line + f"; now {view.status.value}" + (f" ({view.reason})" if view.reason else ""), view.status

    line, status = run(go)
    out.print(line)
    if status is not None:
        code = wait_exit_code([status], dry_run=False) if approve else 0
        if code:
            raise typer.Exit(code)


@app.command()
def approve(
    execution_id: str,
    comment: Annotated[str, typer.Option("--comment", "-m")] = "",
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the change is done (exit codes as execute --wait).")] = False,
    as_user: AsUser = None,
) -> None:
    """Approve an execution that awaits a human (not your own)."""
    _decide(execution_id, True, comment, as_user, wait)


@app.command()
def reject(
    execution_id: str,
    reason: Annotated[str, typer.Option("--reason", "-m", help="Why (recorded in the audit trail).")],
    as_user: AsUser = None,
) -> None:
    """Reject an execution that awaits a human."""
    _decide(execution_id, False, reason, as_user)


@app.command()
def rollback(
    execution_id: str,
    reason: Annotated[str, typer.Option("--reason", "-m")] = "",
    as_user: AsUser = None,
) -> None:
    """Undo a completed change during its rollback window."""
    settings = acting(as_user)

    async def go() -> str:
        async with _executions() as executions:
            return await executions.rollback(execution_id, RollbackInput(actor=settings.user, reason=reason))

    out.print(run(go))


@app.command()
def acknowledge(
    execution_id: str,
    comment: Annotated[str, typer.Option("--comment", "-m", help="What you are doing about it.")] = "",
    as_user: AsUser = None,
) -> None:
    """Stop the repeated alarm of a failed undo: you have seen it and act on the resource."""
    settings = acting(as_user)

    async def go() -> Acknowledgement:
        async with _executions() as executions:
            return await executions.acknowledge(
                execution_id, Acknowledgement(actor=settings.user, role=settings.role, comment=comment))

    ack = run(go)
    out.print(f"alarm of {execution_id} acknowledged by {ack.actor}")


@app.command()
def cancel(execution_id: str) -> None:
    """Cancel an execution; whatever it changed is undone."""

    async def go() -> None:
        async with _executions() as executions:
            await executions.cancel(execution_id)

    run(go)
    out.print(f"cancellation requested for {execution_id}")


@app.command()
def status(
    execution_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show an execution: status, step, progress and its step log."""

    async def go() -> ExecutionView:
        async with _executions() as executions:
            return await executions.status(execution_id)

    view = run(go)
    if as_json:
        out.print_json(view.model_dump_json())
        return
    out.print(f"[bold]{view.execution_id}[/bold]  {view.kind} {view.resource_id}  "
              f"[bold]{view.status.value}[/bold] {view.progress_percent}%  risk {view.risk.value if view.risk else '-'}")
    if view.reason:
        out.print(f"reason: {view.reason}")
    if view.rollback_available_until:
        out.print(f"rollback available until {view.rollback_available_until.isoformat()}")
    table = Table("at", "status", "step")
    for entry in view.log:
        table.add_row(entry.at.strftime("%H:%M:%S"), entry.status.value, entry.message)
    out.print(table)


@app.command("list")
def list_(
    customer: Annotated[str | None, typer.Option("--customer")] = None,
    status_: Annotated[ExecutionStatus | None, typer.Option("--status", case_sensitive=False)] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Rows on this page.")] = 50,
    cursor: Annotated[str | None, typer.Option("--cursor", help="Go on from where a page ended.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every row, page after page.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List executions from the read model, newest first, a page at a time (--cursor, --all)."""

    async def go() -> tuple[list[ExecutionView], str | None]:
        async with _executions(lazy=True) as executions:  # the read model answers; Temporal is not asked

            async def page(after: str | None, size: int) -> tuple[list[ExecutionView], str | None]:
                try:
                    return await executions.list_executions(customer_id=customer, status=status_, limit=size,
                                                            cursor=after)
                except InvalidCursor as exc:
                    raise ReclaimError(f"--cursor: {exc}") from None

            views, after = await page(cursor, 1000 if all_ else limit)
            while all_ and after is not None:
                more, after = await page(after, 1000)
                views += more
            return views, after

    views, after = run(go)
    if as_json:
        out.print_json(data=[v.model_dump(mode="json", exclude={"log"}) for v in views])
    else:
        out.print(executions_table(views))
    if after is not None:
        err.print(f"more: add --cursor {after} (or use --all)")


def executions_table(views: list[ExecutionView]) -> Table:
    table = Table("execution", "kind", "resource", "status", "risk", "savings/mo", "reason")
    for v in views:
        table.add_row(v.execution_id, v.kind, v.resource_id, v.status.value, v.risk.value if v.risk else "-",
                      f"${v.estimated_monthly_savings:,.2f}", (v.reason or "")[:60])
    return table


@app.command()
def actions(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The catalogue of action kinds."""
    from starter.catalogue import catalogue

    entries = catalogue()
    if as_json:
        out.print_json(data=entries)
        return
    table = Table("kind", "resource", "reversible", "base risk", "permissions")
    for e in entries:
        table.add_row(e["kind"], e["resource_type"], "yes" if e["reversible"] else "no", e["base_risk"],
                      ", ".join(e["permissions"]))
    out.print(table)


# ---- running the stack -------------------------------------------------------------------------


@app.command("worker")
def worker_cmd() -> None:
    """Run a worker (scale by running more)."""
    from worker import run_worker

    logmask.configure(state.settings.log_level)

    async def go() -> None:
        await run_worker()

    run(go)


@app.command("token")
def token_cmd(
    subject: Annotated[str, typer.Option("--subject", help="Who the token belongs to.")],
    role: Annotated[Role, typer.Option("--role", case_sensitive=False)],
    customer: Annotated[list[str], typer.Option("--customer", help="Repeat for several; '*' for all.")],
) -> None:
    """Make an API token: prints it once, and the hashed entry for the tokens file."""
    import secrets

    from starter.api.auth import hash_token

    token = secrets.token_urlsafe(32)
    entry = {"subject": subject, "role": role.value, "customers": customer, "sha256": hash_token(token)}
    out.print(f"token (shown once): {token}")
    out.print("tokens file entry:")
    out.print(f"  - {json.dumps(entry)}", soft_wrap=True)


@app.command("api")
def api_cmd(
    host: Annotated[str | None, typer.Option(help="Bind address (default RECLAIM_API_HOST or 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RECLAIM_API_PORT or 8000).")] = None,
) -> None:
    """Serve the REST API (OpenAPI at /docs)."""
    from starter.api.identities import IdentitiesFileError, load_identities
    from starter.api.server import serve_until_interrupted

    settings = state.settings

    async def go() -> None:
        settings.approval_signer()  # an unreadable or unmatched signing key: one line, before serving
        try:  # a malformed identities file: one line naming its line and field, before serving
            load_identities(settings.identities_file)
        except IdentitiesFileError as exc:
            raise ReclaimError(str(exc)) from None
        await serve_until_interrupted(settings, host or settings.api_host, port or settings.api_port)

    run(go)


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="Temporal frontend port.")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Web UI port.")] = 8233,
    api_port: Annotated[int | None, typer.Option(help="REST API port (default RECLAIM_API_PORT or 8000).")] = None,
    encrypt: Annotated[bool, typer.Option("--encrypt", help="Encrypt payloads (as RECLAIM_ENCRYPT=true); the "
                                          "Web UI decodes through a codec server.")] = False,
    codec_port: Annotated[int | None, typer.Option(help="Codec server port (default RECLAIM_CODEC_SERVER_PORT or 8234).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve the worker's /metrics here (default "
                                                     "RECLAIM_WORKER_METRICS_PORT; unset: not served; 0: any free port).")] = None,
) -> None:
    """The embedded stack in the foreground: Temporal dev server + Web UI + worker + API. Ctrl-C stops it."""
    from starter.stack import run_dev

    settings = state.settings
    settings.encrypt = settings.encrypt or encrypt
    if metrics_port is not None:
        settings.worker_metrics_port = metrics_port
    run(lambda: run_dev(settings, port=port, ui_port=ui_port, api_port=api_port or settings.api_port,
                        codec_port=codec_port))


@app.command()
def demo(
    exit_: Annotated[bool, typer.Option("--exit", help="Exit when the scenario ends (default when stdin is not a terminal).")] = False,
    keep_up: Annotated[bool, typer.Option("--keep-up", help="Stay up for the README's walkthrough even without a terminal.")] = False,
    port: Annotated[int, typer.Option(help="Temporal frontend port (0: any free port).")] = 0,
    ui_port: Annotated[int, typer.Option(help="Web UI port.")] = 8233,
    encrypt: Annotated[bool, typer.Option("--encrypt", help="Encrypt payloads; the Web UI decodes them.")] = False,
) -> None:
    """Run the scripted scenario against a seeded mock AWS account."""
    from starter.demo import run_demo

    state.settings.encrypt = state.settings.encrypt or encrypt
    stay = keep_up or (not exit_ and sys.stdin.isatty())
    ok = run(lambda: run_demo(state.settings, port=port, ui_port=ui_port, keep_up=stay, console=out))
    if not ok:
        raise typer.Exit(1)


@app.command("codec-server")
def codec_server_cmd(
    host: Annotated[str | None, typer.Option(help="Bind address (default RECLAIM_CODEC_SERVER_HOST or 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RECLAIM_CODEC_SERVER_PORT or 8234).")] = None,
) -> None:
    """Serve /encode and /decode for the Web UI and `temporal --codec-endpoint` (bearer token or the UI's JWT; README, Encryption)."""
    from starter.api.server import serve_until_interrupted
    from starter.codec_server import configured_app

    settings = state.settings
    logmask.configure(settings.log_level)  # INFO by default: the decode audit lines
    run(lambda: serve_until_interrupted(settings, host or settings.codec_server_host,
                                        port or settings.codec_server_port, app=configured_app(settings)))


@app.command("codec-key")
def codec_key_cmd(key_id: Annotated[str, typer.Option("--id", help="The key's id (in every payload it seals).")]) -> None:
    """Print a new payload key, `id=base64`: put it first in RECLAIM_CODEC_KEYS or the keys file."""
    from runtime.codec import CodecError, new_key_line

    try:
        out.print(new_key_line(key_id), soft_wrap=True)
    except CodecError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command("approval-key")
def approval_key_cmd(path: Annotated[Path, typer.Argument(help="The private key's file (PEM).")]) -> None:
    """Print the public key of the approval signing key at PATH, making a new one (mode 0600) if
    PATH does not exist: the API signs with it (RECLAIM_APPROVAL_SIGNING_KEY=file:PATH), executions
    verify with the public key (RECLAIM_APPROVAL_PUBLIC_KEY)."""
    from domain.signing import public_key_text
    from runtime.approval_key import ApprovalKeyError, new_key_file, parse_private_key

    try:
        made = not path.exists()
        key = new_key_file(path) if made else parse_private_key(path.read_text())
    except (ApprovalKeyError, OSError) as exc:
        err.print(f"[red]error:[/red] {path}: {exc}")
        raise typer.Exit(1) from None
    if made:
        err.print(f"wrote a new Ed25519 signing key to {path} (readable by you only)")
    out.print(f"RECLAIM_APPROVAL_PUBLIC_KEY={public_key_text(key)}", soft_wrap=True)


app.add_typer(plan_app, name="plan")
app.add_typer(notify_app, name="notify")
app.add_typer(windows_app, name="windows")
app.add_typer(recommendations_app, name="recommendations")
app.add_typer(accounts_app, name="accounts")
app.add_typer(iam_app, name="iam")
app.add_typer(schedule_app, name="schedule")
app.command("import")(import_command)
app.command("scan")(scan_command)
app.command("savings")(savings_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
