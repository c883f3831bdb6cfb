"""`reclaim windows ...`: when may a change start, under the windows file (`RECLAIM_WINDOWS_FILE`).

The answer is the one an execution gets when it asks (`domain/windows.py` `next_start`),
for the scope given here and the kind's expected duration; an SSM maintenance window or
Change Calendar the file names is read in the account (its role, as the session
`reclaim-windows-<you>`) and shown with its source and state.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from activities.actions.base import UnknownAction, action_class
from activities.windows import WindowActivities, WindowsFileError
from domain.ssm_schedules import CalendarTimeline
from domain.windows import HORIZON, ChangeScope, Lookups, WindowsFile, next_start, window_openings
from starter.cli_common import err, out, state

if TYPE_CHECKING:
    from activities.aws import SessionFactory

windows_app = typer.Typer(no_args_is_help=True, help="Change windows and freezes: when may a change start.")

WindowsFileOption = Annotated[
    Path | None, typer.Option("--file", envvar="RECLAIM_WINDOWS_FILE", help="The windows file (YAML).",
                              show_envvar=True),
]


@windows_app.command("next")
def next_(
    account: Annotated[str, typer.Option("--account", help="The AWS account id.")],
    kind: Annotated[str, typer.Option("--kind", help="The change's kind (its expected duration counts).")] = "ec2.stop",
    customer: Annotated[str, typer.Option("--customer")] = "default",
    region: Annotated[str, typer.Option("--region")] = "us-east-1",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE the resource carries (repeat).")] = None,
    file: WindowsFileOption = None,
) -> None:
    """When a change of KIND in ACCOUNT may start, and why not now."""
    try:
        windows = WindowActivities(file, sessions=_sessions()) if file is not None else WindowActivities()
        traits = action_class(kind).traits()
    except WindowsFileError as exc:
        for problem in exc.problems:
            err.print(f"[red]error:[/red] {escape(problem)}", highlight=False)
        raise typer.Exit(1) from None
    except UnknownAction as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    tags = dict(t.split("=", 1) for t in (tag or []) if "=" in t)
    change = ChangeScope(customer_id=customer, account_id=account, region=region, kind=kind,
                         tags=tags, needs=traits.expected_duration, now=datetime.now(UTC))
    rules = windows.rules()
    lookups = windows.lookups(rules, change)
    verdict = next_start(rules, change, lookups)
    if verdict.open:
        out.print(f"now: {escape(verdict.reason)}")
    elif verdict.start is None:
        out.print(f"never: {escape(verdict.reason)}")
    else:
        out.print(f"{verdict.start.isoformat()}: {escape(verdict.reason)}")
    for line in _sources(rules, change, lookups):
        out.print(f"  {escape(line)}", highlight=False)


def _sessions() -> SessionFactory:
    from activities.aws import SessionFactory

    settings = state.settings
    return SessionFactory(role_arn_template=settings.role_arn_template, endpoint_url=settings.aws_endpoint_url,
                          accounts=settings.accounts(), session_name=f"reclaim-windows-{settings.user}")


def _sources(rules: WindowsFile, change: ChangeScope, lookups: Lookups) -> list[str]:
    """One line per SSM window and calendar covering the change: where it comes from, what it says."""
    lines = []
    for window in rules.windows:
        if window.ssm_window is None or not window.covers(change):
            continue
        found = lookups.windows.get(window.ssm_window)
        openings = window_openings(window, lookups, change.now, change.now + HORIZON)
        if isinstance(openings, str) or found is None or isinstance(found, str):
            lines.append(f"{openings}" if isinstance(openings, str) else f"window {window.name}: {found}")
            continue
        first = next((o for o in openings if o.last_start >= change.now), None)
        when = (f"next opening {first.opens.isoformat()} (last start {first.last_start.isoformat()}, closes "
                f"{first.closes.isoformat()})" if first else f"no opening within {HORIZON.days} days")
        lines.append(f"window {window.name}: {found.source()}; {when}")
    for freeze in rules.freezes:
        if freeze.change_calendar is None or not freeze.covers(change):
            continue
        calendar = lookups.calendars.get(freeze.change_calendar)
        described = calendar.describe() if isinstance(calendar, CalendarTimeline) else str(calendar)
        lines.append(f"freeze {freeze.name}: {described}")
    return lines
