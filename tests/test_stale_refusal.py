"""A stale recommendation (its source no longer returned it) is not executed without force: not by
`Executions.start` (the CLI's `reclaim execute`), not by the API's execute route, not in a plan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from domain.plan import PlanSpec
from domain.sync import SyncScope
from starter.executions import Executions, ReclaimError, StaleRecommendation, kept_open
from starter.plans import Plans
from store.repository import Store
from tests.conftest import AwsAccount, Stack
from tests.helpers import request as request_for
from tests.test_api import Api, open_api, rec_for, settled

SCOPE = SyncScope(source="reclaim-scan", customer_id="acme")


class ReachedTemporal(Exception):
    pass


class NoTemporal:
    """Any use of the client means the refusal was passed."""

    def __getattr__(self, name: str) -> Any:
        raise ReachedTemporal(name)


@pytest_asyncio.fixture
async def local_store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'reclaim.db'}")
    yield opened
    await opened.close()


async def make_stale(store: Store, rec: Any) -> None:
    scope = SCOPE.model_copy(update={"customer_id": rec.customer_id})
    await store.sync_recommendations([rec], scope)
    assert (await store.sync_recommendations([], scope)).stale_ids == [rec.id]


async def test_start_refuses_a_stale_recommendation_unless_forced(local_store: Store) -> None:
    rec = rec_for("acme", "i-0123456789abcdef0", source="reclaim-scan")
    executions = Executions(NoTemporal(), "tq", kept_open(local_store))  # type: ignore[arg-type]
    with pytest.raises(ReachedTemporal):  # current: the check passes
        await executions.start(request_for(rec))
    await make_stale(local_store, rec)
    with pytest.raises(StaleRecommendation, match=rf"recommendation {rec.id} is stale: reclaim-scan no longer "
                                                  r"reported it .*--force"):
        await executions.start(request_for(rec))
    with pytest.raises(ReachedTemporal):
        await executions.start(request_for(rec), force=True)
    with pytest.raises(ReachedTemporal):  # a dry run changes nothing: not refused
        await executions.start(request_for(rec, dry_run=True))


async def test_a_plan_naming_a_stale_recommendation_is_refused(local_store: Store) -> None:
    rec = rec_for("acme", "i-0123456789abcdef0", source="reclaim-scan")
    await make_stale(local_store, rec)
    plans = Plans(NoTemporal(), "tq", local_store)  # type: ignore[arg-type]
    with pytest.raises(ReclaimError, match="is stale"):
        await plans.resolve(PlanSpec.model_validate({"recommendation_ids": [rec.id], "dry_run": True}))


@pytest_asyncio.fixture
async def api(stack: Stack) -> AsyncIterator[Api]:
    async with open_api(stack) as opened:
        yield opened


async def test_the_api_refuses_a_stale_recommendation_unless_forced(api: Api, aws: AwsAccount) -> None:
    instance = aws.instance("m5.large")
    rec = rec_for(api.acme, instance, source="reclaim-scan")
    await make_stale(api.stack.store, rec)

    refused = await api.execute("operator", recommendation_id=rec.id)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "stale_recommendation" and "is stale" in refused.json()["detail"]
    inline = await api.execute("operator", rec)
    assert inline.status_code == 409, inline.text

    forced = await api.call("operator", "POST", "/api/v1/executions/execute",
                            json={"recommendation_id": rec.id, "force": True})
    assert forced.status_code == 202, forced.text
    view = await settled(api.stack, forced.json()["execution_id"])
    assert view.status.value == "COMPLETED", view.reason
