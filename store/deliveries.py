"""Notifications delivered, kept in the read model so a delivery retried on another worker does not
post again.

The delivery activity asks `done(key)` before sending and `record(key, ...)` after: what was sent
by any worker of this store is a `duplicate` for every other. The only repeat left is an attempt
whose send reached the channel and whose worker died before `record` ran (every payload carries
the dedup key, so such a receiver can still drop it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.notifications import DeliveryResult
from store.db import Writes, cancellation_safe
from store.tables import Base, NotificationDeliveryRow

Insert = Callable[[type[Base]], postgresql.Insert | sqlite.Insert]


class DeliveryRecords:
    def __init__(self, engine: AsyncEngine, writes: Writes, insert: Insert) -> None:
        self._engine = engine
        self._writes = writes
        self._insert = insert

    async def done(self, key: str) -> DeliveryResult | None:
        """What was delivered under this key, by any worker; None if nothing was."""
        stmt = select(NotificationDeliveryRow.result).where(NotificationDeliveryRow.key == key)
        async with self._engine.connect() as conn:
            found = (await conn.execute(stmt)).scalar_one_or_none()
        return DeliveryResult.model_validate(found) if found is not None else None

    @cancellation_safe
    async def record(self, key: str, result: DeliveryResult, *, at: datetime | None = None) -> None:
        """Keep the first delivery of a key (a second one changes nothing)."""
        stmt = self._insert(NotificationDeliveryRow).values(
            key=key, result=result.model_dump(mode="json"), delivered_at=at or datetime.now(UTC))
        async with self._writes.begin() as conn:
            await conn.execute(stmt.on_conflict_do_nothing(index_elements=[NotificationDeliveryRow.key]))
