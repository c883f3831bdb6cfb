"""`starter.polling`: the one polling loop of the clients."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing

import pytest

from starter.polling import poll, polled


def counter() -> tuple[list[int], Callable[[], Awaitable[int]]]:
    asked: list[int] = []

    async def fetch() -> int:
        asked.append(len(asked) + 1)
        return asked[-1]

    return asked, fetch


async def test_poll_returns_the_first_answer_that_is_done() -> None:
    asked, fetch = counter()
    assert await poll(fetch, lambda n: n >= 3, interval=0.001) == 3
    assert asked == [1, 2, 3]  # nothing asked after it


async def test_poll_answers_at_once_when_done_at_once() -> None:
    started = time.monotonic()
    assert await poll(counter()[1], lambda n: True, interval=10, timeout=0) == 1
    assert time.monotonic() - started < 1


async def test_poll_raises_what_too_long_makes_of_the_last_answer() -> None:
    with pytest.raises(LookupError, match="still 1"):
        await poll(counter()[1], lambda n: False, interval=0.001, timeout=0,
                   too_long=lambda n: LookupError(f"still {n}"))
    with pytest.raises(TimeoutError):
        await poll(counter()[1], lambda n: False, interval=0.001, timeout=0.01)


async def test_the_interval_grows_by_backoff_up_to_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("starter.polling.asyncio.sleep", sleep)
    await poll(counter()[1], lambda n: n == 6, interval=1, backoff=2, max_interval=5)
    assert slept == [1, 2, 4, 5, 5]


async def test_polled_yields_every_answer_until_the_reader_stops() -> None:
    asked, fetch = counter()
    seen = []
    async with aclosing(polled(fetch, interval=0.001)) as answers:
        async for n in answers:
            seen.append(n)
            if n == 4:
                break
    assert seen == asked == [1, 2, 3, 4]
