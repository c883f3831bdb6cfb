"""A read-model write whose caller is cancelled still runs to its end and leaves no lock (issue 10, defect 12).

The 1,525-item plan wedged when activities were cancelled at their timeout while their
write waited on SQLite's one write lock: the cancelled await could hand the connection
back with its transaction open, and every later write then waited on "database is
locked". `store/db.py` `cancellation_safe` runs each write as its own task; this cancels
a caller while its write waits on a lock another process holds, lets the lock go, and
checks the write landed and the next one goes through at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from store.repository import Store
from tests.helpers import eventually
from tests.test_store import view

NEXT_WRITE_TIMEOUT = 10.0  # s; a free database takes milliseconds: bounded far above a loaded machine's pace


@contextmanager
def held_write_lock(path: Path) -> Iterator[None]:
    """Another process's write transaction on the SQLite file, as a slow writer holds it."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait()
        conn.execute("ROLLBACK")
        conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(30), "could not take the database's write lock"
    try:
        yield
    finally:
        release.set()
        thread.join(30)


async def test_a_write_whose_caller_is_cancelled_runs_to_its_end_and_leaves_no_lock(tmp_path: Path) -> None:
    path = tmp_path / "reclaim.db"
    store = await Store.open(f"sqlite+aiosqlite:///{path}")
    first, second = view(1), view(2)
    try:
        with held_write_lock(path):
            caller = asyncio.ensure_future(store.upsert_execution(first))

            async def begun() -> bool:
                """the write has begun: it holds the store's one-writer lock and waits on SQLite's"""
                return store._writes._lock is not None and store._writes._lock.locked()

            await eventually(begun)
            caller.cancel()  # as Temporal cancels an activity at its timeout
            with pytest.raises(asyncio.CancelledError):
                await caller
            assert await store.get_execution(first.execution_id) is None  # still waiting on the lock

        async def landed() -> bool:
            """the cancelled caller's write ran to its end once the lock was let go"""
            return await store.get_execution(first.execution_id) is not None

        await eventually(landed)
        async with asyncio.timeout(NEXT_WRITE_TIMEOUT):  # no transaction was left holding the lock
            assert await store.upsert_execution(second)
        assert await store.get_execution(second.execution_id) is not None
    finally:
        await store.close()
