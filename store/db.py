"""Engines, URLs and migrations: the plumbing under `Store`.

Operators write the URLs they know (`postgres://…`, `sqlite:///…`); the async
drivers are an implementation detail, so the URL is translated here. Migrations
run on open, from whichever process gets there first, so they are serialised
(PostgreSQL advisory lock, a lock file next to a SQLite database) and idempotent.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

DEFAULT_SQLITE_PATH = Path(".reclaim") / "reclaim.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: Key of the PostgreSQL advisory lock held while migrating ("RECLAIM" in ASCII).
MIGRATION_LOCK_KEY = 0x5245434C41494D

#: How long a SQLite writer waits for another one before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 10_000

_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def normalize_url(url: str | URL | None) -> URL:
    """The async-driver URL for what an operator wrote; None means the local SQLite file.

    A SQLite file's directory is created, so a fresh checkout (or a `home` setting
    pointing at a new directory) works without a setup step.
    """
    if url is None:
        DEFAULT_SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
        return URL.create("sqlite+aiosqlite", database=str(DEFAULT_SQLITE_PATH))
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database URL scheme {parsed.drivername!r}: use postgresql://… or sqlite:///…"
        )
    parsed = parsed.set(drivername=driver)
    if driver.startswith("postgresql") and "sslmode" in parsed.query and "ssl" not in parsed.query:
        # libpq spells it sslmode; asyncpg only accepts ssl (same values).
        parsed = parsed.update_query_dict({"ssl": parsed.query["sslmode"]}).difference_update_query(["sslmode"])
    database = sqlite_file(parsed)
    if database is not None:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    return parsed


def render_url(url: URL) -> str:
    """The URL for logs and error messages: the password is masked."""
    return url.render_as_string(hide_password=True)


def sqlite_file(url: URL) -> str | None:
    """The database file of a SQLite URL; None for PostgreSQL and in-memory SQLite."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return database


def create_engine(url: URL) -> AsyncEngine:
    """An engine tuned per backend: WAL and a busy timeout let SQLite take concurrent writers."""
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        return engine
    # Bounded waits: an unreachable server (not refusing, just silent) must fail a write within
    # the activity's own timeout, not hang it until Temporal cancels it mid-connect.
    return create_async_engine(url, pool_pre_ping=True, pool_timeout=10,
                               connect_args={"timeout": 10, "command_timeout": 60})


P = ParamSpec("P")
T = TypeVar("T")


def cancellation_safe(write: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """A write, once begun, runs to its end even if its caller is cancelled.

    A cancelled await inside a transaction (an activity cancelled at its timeout while
    aiosqlite runs the statement in its thread) could hand the connection back with the
    transaction still open: SQLite's one write lock then stays taken and every later write
    waits on "database is locked" (the 1,525-item plan wedged that way). The write runs as
    its own task instead; a cancelled caller stops waiting for it, the task commits or rolls
    back and frees the lock and the connection. Writes are idempotent, so one that lands
    after its caller gave up is harmless.
    """

    @functools.wraps(write)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        task: asyncio.Task[T] = asyncio.ensure_future(write(*args, **kwargs))
        task.add_done_callback(_retrieved)  # a caller that stopped waiting will never look at it
        return await asyncio.shield(task)

    return wrapper


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class Writes:
    """Write transactions on an engine; on SQLite, one at a time per process.

    SQLite has one writer. Concurrent writers in one process (every activity of a
    worker) otherwise meet "database is locked" and SQLite's busy handler, which
    sleeps 1, 2, 5, ... 100 ms between tries: under load the waits, not the writes,
    take the time (measured: 9.1 -> 10.8 executions/s in `make bench`). An asyncio
    lock queues them instead. PostgreSQL takes concurrent writers as they come.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        if self._lock is None:
            async with self._engine.begin() as conn:
                yield conn
            return
        async with self._lock, self._engine.begin() as conn:
            yield conn


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    """Wait for a busy database instead of failing; WAL lets readers run beside the one writer."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config built in code, so an installed package needs no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest migration shipped with this code."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to head; a no-op when it is already there.

    Two processes opening a new database at once would both see an empty schema
    and both try to create it, so the upgrade runs under a lock that spans
    processes; the second one then finds head and does nothing.
    """
    async with _migration_lock(engine), engine.connect() as conn:
        await conn.run_sync(_upgrade)
        await conn.commit()


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


@asynccontextmanager
async def _migration_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    if engine.dialect.name == "postgresql":
        async with _pg_advisory_lock(engine):
            yield
        return
    database = sqlite_file(engine.url)
    if database is None:
        yield  # in-memory: private to this process
        return
    async with _file_lock(Path(f"{database}.migrate-lock")):
        yield


@asynccontextmanager
async def _pg_advisory_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """A session-level lock on its own connection, released even if the upgrade fails."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        await conn.commit()
        try:
            yield
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            await conn.commit()


@asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive flock, polled so that waiting never blocks the event loop and stays cancellable."""
    if sys.platform == "win32":  # no flock; concurrent first opens are the operator's to avoid
        yield
        return
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
