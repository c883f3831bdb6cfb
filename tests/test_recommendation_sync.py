"""Keeping imported recommendations current (domain/sync.py, Store.sync_recommendations), on SQLite and PostgreSQL:
a re-import updates in place and changes nothing when nothing changed, a vanished one goes stale, one held by
an execution is never changed."""

from __future__ import annotations

from typing import Any

from alembic import command
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, insert, inspect

from domain.recommendation import Recommendation
from domain.status import ExecutionStatus as S
from domain.sync import Stored, SyncScope, plan_sync
from store import NEW, STALE
from store.db import alembic_config, head_revision
from store.repository import Store, _recommendation_values
from store.tables import RecommendationRow
from tests import test_store
from tests.test_store import _run_sync, _schema, view

# The store tests' fixtures: an empty SQLite file and an empty PostgreSQL database per test.
db_url, store = test_store.db_url, test_store.store

SCOPE = SyncScope(source="reclaim-scan", customer_id="acme", account_ids=["123456789012"], regions=["us-east-1"])


def rec(n: int, *, savings: float = 10.0, **extra: Any) -> Recommendation:
    base: dict[str, Any] = {
        "id": f"rec-{n}", "customer_id": "acme", "account_id": "123456789012", "region": "us-east-1",
        "kind": "ec2.stop", "resource_id": f"i-{n:017x}", "estimated_monthly_savings": savings,
        "source": "reclaim-scan", "source_id": f"src-{n}",
    }
    return Recommendation.model_validate(base | extra)


async def test_reimport_changes_nothing_and_a_vanished_one_goes_stale(store: Store) -> None:
    first = await store.sync_recommendations([rec(1), rec(2), rec(3)], SCOPE)
    assert (first.counts.new, first.counts.updated, first.counts.stale) == (3, 0, 0)
    before = {s.recommendation.id: s.updated_at for s in await store.list_recommendations()}

    again = await store.sync_recommendations([rec(1), rec(2), rec(3)], SCOPE)
    assert again.counts.model_dump() == {"new": 0, "updated": 0, "unchanged": 3, "stale": 0, "held": 0,
                                         "conflicts": 0}
    assert {s.recommendation.id: s.updated_at for s in await store.list_recommendations()} == before

    changed = await store.sync_recommendations([rec(1, savings=20.0), rec(2)], SCOPE)
    assert (changed.updated_ids, changed.stale_ids) == (["rec-1"], ["rec-3"])
    stored = await store.get_recommendation("rec-1")
    assert stored is not None and stored.estimated_monthly_savings == 20.0
    assert len(await store.list_recommendations()) == 3  # in place, never a duplicate
    assert [s.recommendation.id for s in await store.list_recommendations(status=STALE)] == ["rec-3"]
    assert {s.recommendation.id for s in await store.list_recommendations(status=NEW)} == {"rec-1", "rec-2"}
    state = await store.recommendation_state("rec-3")
    assert state is not None and state.stale_at is not None

    still = await store.sync_recommendations([rec(1, savings=20.0), rec(2)], SCOPE)
    assert (still.counts.stale, still.counts.unchanged) == (0, 2)  # stale once, not again

    back = await store.sync_recommendations([rec(1, savings=20.0), rec(2), rec(3)], SCOPE)
    assert back.updated_ids == ["rec-3"]  # returned again: fresh again
    state = await store.recommendation_state("rec-3")
    assert state is not None and state.stale_at is None


async def test_outside_the_scope_nothing_goes_stale(store: Store) -> None:
    await store.sync_recommendations([rec(1), rec(2, region="eu-west-1"), rec(3, source="cost-optimization-hub"),
                                      rec(4, customer_id="globex")], SyncScope(source="reclaim-scan",
                                                                              customer_id="acme"))
    await store.save_recommendations([rec(5, source="manual")])
    plan = await store.sync_recommendations([], SCOPE)
    assert plan.stale_ids == ["rec-1"]
    assert [s.recommendation.id for s in await store.list_recommendations(source="reclaim-scan", status=STALE)] \
        == ["rec-1"]


async def test_a_recommendation_held_by_an_execution_is_never_changed(store: Store) -> None:
    await store.sync_recommendations([rec(1), rec(2)], SCOPE)
    await store.upsert_execution(view(1, sequence=1, status=S.AWAITING_APPROVAL))
    await store.upsert_execution(view(2, sequence=1, status=S.COMPLETED))

    plan = await store.sync_recommendations([rec(1, savings=99.0)], SCOPE)  # rec-1 changed, rec-2 vanished
    assert (plan.counts.held, plan.counts.updated, plan.counts.stale) == (2, 0, 0)
    stored = await store.get_recommendation("rec-1")
    assert stored is not None and stored.estimated_monthly_savings == 10.0
    state = await store.recommendation_state("rec-2")
    assert state is not None and state.stale_at is None and state.status == "COMPLETED"

    await store.upsert_execution(view(1, sequence=2, status=S.REJECTED))  # no longer held
    plan = await store.sync_recommendations([rec(1, savings=99.0)], SCOPE)
    assert plan.updated_ids == ["rec-1"]


async def test_another_customers_id_is_left_alone(store: Store) -> None:
    await store.save_recommendations([rec(1, customer_id="globex")])
    plan = await store.sync_recommendations([rec(1)], SCOPE)
    assert plan.counts.conflicts == 1 and not plan.write
    stored = await store.get_recommendation("rec-1")
    assert stored is not None and stored.customer_id == "globex"


async def test_0005_adds_stale_at_to_stored_rows_and_downgrades(db_url: str) -> None:
    from datetime import UTC, datetime

    def seed(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), "0004")
        connection.execute(insert(RecommendationRow.__table__).values(
            **_recommendation_values(rec(1), datetime(2026, 12, 1, tzinfo=UTC))))

    await _run_sync(db_url, seed)
    opened = await Store.open(db_url)
    try:
        assert (await _schema(db_url))[::2] == (head_revision(), [])
        state = await opened.recommendation_state("rec-1")
        assert state is not None and state.stale_at is None and state.recommendation == rec(1)
        assert (await opened.sync_recommendations([], SCOPE)).stale_ids == ["rec-1"]
    finally:
        await opened.close()

    def columns_after_downgrade(connection: Connection) -> list[str]:
        command.downgrade(alembic_config(connection), "0004")
        return [c["name"] for c in inspect(connection).get_columns("recommendations")]

    assert "stale_at" not in await _run_sync(db_url, columns_after_downgrade)
    again = await Store.open(db_url)
    try:
        assert await again.get_recommendation("rec-1") == rec(1)
    finally:
        await again.close()


ids = st.lists(st.integers(min_value=1, max_value=8), max_size=8, unique=True)


@given(stored_ids=ids, incoming_ids=ids, stale=st.sets(st.integers(1, 8)), held=st.sets(st.integers(1, 8)),
       bump=st.sets(st.integers(1, 8)))
def test_plan_sync_properties(stored_ids: list[int], incoming_ids: list[int], stale: set[int], held: set[int],
                              bump: set[int]) -> None:
    stored = [Stored(recommendation=rec(n), stale=n in stale, held=n in held) for n in stored_ids]
    incoming = [rec(n, savings=11.0 if n in bump else 10.0) for n in incoming_ids]
    plan = plan_sync(incoming, stored, SCOPE)
    written = {r.id for r in plan.write}
    # Nothing held is written or staled; every incoming id is accounted for exactly once.
    assert not (written | set(plan.mark_stale)) & {f"rec-{n}" for n in held if n in stored_ids}
    c = plan.counts
    assert c.new + c.updated + c.unchanged + c.conflicts + len([n for n in incoming_ids
                                                                 if n in held and n in stored_ids]) \
        == len(incoming_ids)
    # Stale only what is stored, current, not returned; never a returned one.
    assert set(plan.mark_stale) == {f"rec-{n}" for n in stored_ids
                                    if n not in incoming_ids and n not in stale and n not in held}
    # Applying the plan and syncing the same again changes nothing.
    after = {s.recommendation.id: s for s in stored}
    for r in plan.write:
        after[r.id] = Stored(recommendation=r, stale=False, held=r.id in {f"rec-{n}" for n in held})
    for rec_id in plan.mark_stale:
        after[rec_id] = after[rec_id].model_copy(update={"stale": True})
    again = plan_sync(incoming, list(after.values()), SCOPE)
    assert not again.write and not again.mark_stale
