"""`reclaim accounts list|discover|check` and `reclaim iam policy`: the accounts file and the role."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import boto3
import typer
from rich.table import Table

from activities.accounts import AccountsFileError, discovered, load_accounts_file, with_discovered
from domain.accounts import AccountsFile
from starter.cli_common import err, out, state

accounts_app = typer.Typer(no_args_is_help=True, help="The accounts file (RECLAIM_ACCOUNTS_FILE): list, discover, check.")
iam_app = typer.Typer(no_args_is_help=True, help="The IAM role Reclaim assumes in each account.")

#: `reclaim accounts check` exits with this when a role cannot be assumed or a permission is missing.
EXIT_CHECK_FAILED = 4


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def _file_path(path: Path | None = None) -> Path:
    found = path or state.settings.accounts_file
    if found is None:
        raise _fail("no accounts file: set RECLAIM_ACCOUNTS_FILE (or pass --file)")
    return found


def _load(path: Path | None = None) -> AccountsFile:
    try:
        return load_accounts_file(_file_path(path))
    except AccountsFileError as exc:
        raise _fail(str(exc)) from None


FileOption = Annotated[Path | None, typer.Option("--file", help="The accounts file (default RECLAIM_ACCOUNTS_FILE).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@accounts_app.command("list")
def list_accounts(file: FileOption = None, as_json: JsonOption = False) -> None:
    """The accounts with their state (enabled or disabled), role, regions, kinds and policy overrides."""
    accounts = _load(file)
    rows = [{"id": a.id, "name": a.name, "customer": a.customer, "state": "enabled" if a.enabled else "disabled",
             "role_arn": accounts.role_arn(a) or "default chain", "external_id": bool(accounts.external_id(a)),
             "regions": accounts.regions(a), "kinds": accounts.kinds(a), "policy": a.policy.model_dump(exclude_none=True)}
            for a in accounts.accounts]
    if as_json:
        out.print_json(data=rows)
        return
    table = Table("account", "name", "customer", "state", "role", "regions", "kinds", "policy overrides")
    for a, row in zip(accounts.accounts, rows, strict=True):
        table.add_row(a.id, a.name, a.customer, "enabled" if a.enabled else "[red]DISABLED[/red]",
                      str(row["role_arn"]) + (" (external id)" if row["external_id"] else ""),
                      ", ".join(accounts.regions(a)) or "any", ", ".join(accounts.kinds(a) or ["every kind"]),
                      a.policy.describe() or "-")
    out.print(table)
    enabled = sum(a.enabled for a in accounts.accounts)
    out.print(f"{len(accounts.accounts)} accounts, {enabled} enabled, {len(accounts.accounts) - enabled} disabled")


@accounts_app.command("discover")
def discover(
    out_file: Annotated[Path | None, typer.Option("--out", help="Where to write (default RECLAIM_ACCOUNTS_FILE): "
                                                            "appended to its accounts list, or a new file.")] = None,
    role_name: Annotated[str, typer.Option(help="The role's name in every account (a new file's default).")] = "ReclaimExecutor",
    region: Annotated[list[str] | None, typer.Option("--region", help="A new file's default regions; repeat.")] = None,
    customer_tag: Annotated[str, typer.Option(help="The account tag naming its customer.")] = "customer",
    customer: Annotated[str, typer.Option(help="The customer of an account without that tag.")] = "unassigned",
) -> None:
    """Read AWS Organizations and write its accounts that the file lacks, DISABLED, for review."""
    path = _file_path(out_file)
    text = path.read_text() if path.exists() else None
    known = {a.id for a in _load(path).accounts} if text and text.strip() else set()
    organizations = boto3.client("organizations", endpoint_url=state.settings.aws_endpoint_url)
    entries = discovered(organizations, known, customer_tag=customer_tag, default_customer=customer)
    if not entries:
        out.print(f"nothing new: every active account of the organization is in {path}")
        return
    note = (f"discovered {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from AWS Organizations: review each "
            "(customer, regions, kinds, policy), then set enabled: true")
    defaults = {"role_arn": f"arn:aws:iam::{{account_id}}:role/{role_name}", "regions": region or ["us-east-1"]}
    try:
        path.write_text(with_discovered(text, entries, note, defaults=defaults, source=str(path)))
    except AccountsFileError as exc:
        raise _fail(str(exc)) from None
    out.print(f"wrote {len(entries)} accounts to {path}, all disabled: review them, then set enabled: true")


@accounts_app.command("check")
def check(
    file: FileOption = None,
    account: Annotated[list[str] | None, typer.Option("--account", help="Only these accounts; repeat.")] = None,
    region: Annotated[list[str] | None, typer.Option("--region", help="Only these regions (default each account's).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Prove per account and region that the role can be assumed and its kinds' calls are allowed.

    Exit 0 when every role was assumed and nothing is missing; 4 otherwise (the table says what).
    """
    from activities.accounts_check import check_all
    from activities.aws import SessionFactory

    accounts = _load(file)
    settings = state.settings
    sessions = SessionFactory(role_arn_template=settings.role_arn_template, endpoint_url=settings.aws_endpoint_url,
                              accounts=lambda: accounts, session_name=f"reclaim-check-{settings.user}")
    rows = check_all(sessions, accounts, only=account, regions=region)
    if as_json:
        out.print_json(data=[vars(row) for row in rows])
    else:
        table = Table("account", "region", "assumed as", "result", "missing", "not provable ahead")
        for row in rows:
            result = "[green]ok[/green]" if row.ok else "[red]FAILED[/red]"
            missing = ", ".join(row.missing + row.errors) or ("-" if row.assumed.startswith("arn:") else "role")
            table.add_row(f"{row.account_id} ({row.name})", row.region, row.assumed, f"{result} ({row.proven} proven)",
                          missing, ", ".join(row.unproven) or "-")
        out.print(table)
    if not all(row.ok for row in rows):
        raise typer.Exit(EXIT_CHECK_FAILED)


@iam_app.command("policy")
def iam_policy(
    kinds: Annotated[str | None, typer.Option("--kinds", help="Comma-separated kinds (default: every kind).")] = None,
    trust: Annotated[str | None, typer.Option("--trust", help="Print instead the role's trust policy for this "
                                                              "principal ARN (the worker's), with the external id.")] = None,
) -> None:
    """Print the least-privilege IAM policy (JSON) for the role Reclaim assumes in each account."""
    from activities.iam import policy_document, trust_document

    if trust:
        typer.echo(json.dumps(trust_document(trust), indent=2))
        return
    wanted = [k.strip() for k in kinds.split(",") if k.strip()] if kinds else None
    try:
        document = policy_document(wanted)
    except LookupError as exc:
        raise _fail(str(exc.args[0])) from None
    typer.echo(json.dumps(document, indent=2))
