"""How a database failure crosses the activity boundary: one short, typed line.

A driver's exception carries its chain (pool, dialect, socket) and, for a failed
statement, the SQL with its parameters: a whole execution view. Sent as is, it
overflows Temporal's failure size limit (the server then keeps only "Failure
exceeds size limit.") and copies read-model rows into the history. The
activity fails instead with the error's class and first line, retried like any
transient failure.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from temporalio.exceptions import ApplicationError

STORE_UNAVAILABLE = "StoreUnavailable"
P = ParamSpec("P")
T = TypeVar("T")


def store_failure(error: BaseException) -> ApplicationError:
    original = getattr(error, "orig", None) or error
    first_line = (str(original).strip().splitlines() or [""])[0][:300]
    return ApplicationError(f"read model unavailable: {type(original).__name__}: {first_line}",
                            type=STORE_UNAVAILABLE)


def store_call(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Wrap an async activity that talks to the store."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise store_failure(exc) from None

    return wrapper
