"""The one polling loop of the clients: ask, look, sleep a little longer, until done or out of time.

Workflows and activities never poll like this (they wait on conditions, retries and heartbeats);
only the clients outside Temporal, which can only ask, do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

T = TypeVar("T")


async def polled(
    fetch: Callable[[], Awaitable[T]], *, interval: float, max_interval: float | None = None,
    backoff: float = 1.0, timeout: float | None = None,
    too_long: Callable[[T], Exception] | None = None,
) -> AsyncGenerator[T, None]:
    """Each answer of `fetch`, the first at once, then `interval` apart (times `backoff` after each,
    up to `max_interval`). Past `timeout` seconds, after an answer that did not end the loop, raise
    `too_long(last answer)` (a TimeoutError without it)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = interval
    while True:
        value = await fetch()
        yield value
        if deadline is not None and time.monotonic() > deadline:
            raise too_long(value) if too_long is not None else TimeoutError(f"still polling after {timeout} s")
        await asyncio.sleep(delay)
        delay = min(delay * backoff, max_interval if max_interval is not None else delay * backoff)


async def poll(
    fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, interval: float,
    max_interval: float | None = None, backoff: float = 1.0, timeout: float | None = None,
    too_long: Callable[[T], Exception] | None = None,
) -> T:
    """The first answer of `fetch` that is `done` (see `polled` for the pace and the timeout)."""
    async with aclosing(polled(fetch, interval=interval, max_interval=max_interval, backoff=backoff,
                               timeout=timeout, too_long=too_long)) as answers:
        async for value in answers:
            if done(value):
                return value
    raise AssertionError("unreachable: polled() never ends by itself")  # pragma: no cover
