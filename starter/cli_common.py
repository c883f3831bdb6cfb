"""What every `reclaim` command shares: the consoles, settings, `run` (clean errors, clean exit), connections."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from temporalio.service import RPCError

from activities.notify.config import NotifyFileError
from activities.windows import WindowsFileError
from runtime.approval_key import ApprovalKeyError
from runtime.codec import CodecError
from runtime.settings import Settings
from runtime.temporal_client import connect
from starter.executions import Executions, ReclaimError
from starter.steering import Steering

if TYPE_CHECKING:
    from store.repository import Store

# Piped output (CI logs, `| less`) gets a wide table instead of an 80-column squeeze.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)  # an error is one line, however long
T = TypeVar("T")


class State:
    settings: Settings


state = State()


AsUser = Annotated[
    str | None, typer.Option("--as", help="Who is acting (default: RECLAIM_USER or your login).")
]


def acting(as_user: str | None) -> Settings:
    if as_user:
        state.settings.user = as_user
    return state.settings


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine as a command: clean errors, clean exit."""

    async def _main() -> T:
        try:
            return await make()
        finally:
            await asyncio.sleep(0.1)  # let the Temporal bridge settle before exit

    try:
        return asyncio.run(_main())
    except (ReclaimError, NotifyFileError, WindowsFileError, CodecError, ApprovalKeyError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except RPCError as exc:
        err.print(f"[red]error:[/red] Temporal at {state.settings.temporal_address}: {exc.message}")
        raise typer.Exit(1) from None
    except (ConnectionError, OSError, RuntimeError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except Exception as exc:  # last resort: one line, never a traceback
        err.print(f"[red]error:[/red] unexpected {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from None


@asynccontextmanager
async def _executions(*, lazy: bool = False) -> AsyncIterator[Steering]:
    """The steering of this command: over HTTP when RECLAIM_API_URL and RECLAIM_API_TOKEN are set
    (Temporal and the database untouched), else Temporal and the read model directly. `lazy`: for
    a command that may only read the read model, Temporal is not reached before it is asked."""
    from starter.api_client import ApiExecutions, api_configured

    if api_configured():
        async with ApiExecutions.from_env() as api:
            yield api
        return
    try:
        client = await connect(state.settings, lazy=lazy)
    except RuntimeError as exc:
        raise ReclaimError(f"cannot reach Temporal at {state.settings.temporal_address} ({exc})") from None
    yield Executions(client, state.settings.task_queue, read_model=_store, via="update",
                     accounts=state.settings.accounts(), signer=state.settings.approval_signer())


@asynccontextmanager
async def _store() -> AsyncIterator[Store]:
    from store.repository import Store

    store = await Store.open(state.settings.database())
    try:
        yield store
    finally:
        await store.close()


