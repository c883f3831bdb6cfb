"""`reclaim windows ...`: when may a change start, under the windows file (`RECLAIM_WINDOWS_FILE`).

The answer is the one an execution gets when it asks (`domain/windows.py` `next_start`),
for the scope given here and the kind's expected duration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from activities.actions.base import UnknownAction, action_class
from activities.windows import WindowsFileError, load_windows_file
from domain.windows import ChangeScope, WindowsFile, next_start
from starter.cli_common import err, out

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
        rules = load_windows_file(file) if file is not None else WindowsFile()
        traits = action_class(kind).traits()
    except WindowsFileError as exc:
        for problem in exc.problems:
            err.print(f"[red]error:[/red] {escape(problem)}", highlight=False)
        raise typer.Exit(1) from None
    except UnknownAction as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    tags = dict(t.split("=", 1) for t in (tag or []) if "=" in t)
    verdict = next_start(rules, ChangeScope(customer_id=customer, account_id=account, region=region, kind=kind,
                                            tags=tags, needs=traits.expected_duration, now=datetime.now(UTC)))
    if verdict.open:
        out.print(f"now: {escape(verdict.reason)}")
    elif verdict.start is None:
        out.print(f"never: {escape(verdict.reason)}")
    else:
        out.print(f"{verdict.start.isoformat()}: {escape(verdict.reason)}")
