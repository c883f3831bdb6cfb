"""Bad input refused at the edge, and outages answered as outages (never 404, never 500).

Each failed on the main of 2026-12-01: an id with control characters was accepted (202)
and sat in VALIDATING; P999999999D was accepted as a rollback window; a 100 MB body
was read in full before the 401; a Temporal or database outage answered 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from domain.execution import execution_id_for
from runtime.settings import Settings
from starter.api.app import create_app
from starter.api.deps import Services
from starter.api.limits import MAX_BODY_BYTES, BodySizeLimit
from starter.devserver import free_port
from starter.executions import Executions
from store.repository import Store
from tests.conftest import AwsAccount, Stack
from tests.test_api import BASE, TOKENS, Api, rec_for, token_store
from tests.test_api import api as api  # the fixture, shared

AUTH = {"Authorization": f"Bearer {TOKENS['operator']}"}


async def _http(executions: Executions, store: Store) -> httpx.AsyncClient:
    app = create_app(Services(settings=Settings(), executions=executions, store=store,
                              tokens=token_store("acme", "globex")))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test")


async def test_a_temporal_outage_answers_503_not_404(stack: Stack) -> None:
    nowhere = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True, data_converter=pydantic_data_converter)
    async with await _http(Executions(nowhere, stack.task_queue), stack.store) as http:
        response = await http.get(f"{BASE}/exec-rec-not-stored", headers=AUTH)
        assert response.status_code == 503, response.text
        assert response.json() == {"error": "unavailable", "detail": "Temporal is unreachable; try again shortly"}
        health = await http.get("/healthz")
        assert health.status_code == 503 and health.json()["checks"]["temporal"].startswith("unreachable")


async def test_a_database_outage_answers_503_not_404(stack: Stack) -> None:
    down = await Store.open(f"postgresql://postgres@127.0.0.1:{free_port()}/test", migrate=False)
    try:
        async with await _http(stack.executions, down) as http:
            response = await http.get(f"{BASE}/exec-rec-anything", headers=AUTH)
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "unavailable"
            assert "database" in response.json()["detail"] or "dependency" in response.json()["detail"]
    finally:
        await down.close()


async def test_a_missing_id_is_still_404(api: Api) -> None:
    response = await api.get("viewer", "exec-rec-never-was")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


async def test_a_resource_id_with_control_characters_is_refused_and_nothing_starts(
    api: Api, aws: AwsAccount
) -> None:
    rec = rec_for(api.acme, aws.instance()).model_dump(mode="json")
    for bad, field in (("i-\u00fc\u202e\u0000x", "body.recommendation.resource_id"),
                       ("i-not-an-instance", "body.recommendation.resource_id")):
        rec["resource_id"] = bad
        response = await api.call("operator", "POST", f"{BASE}/execute", json={"recommendation": rec})
        assert response.status_code == 422, response.text
        assert [p["field"] for p in response.json()["detail"]] == [field]
        assert await api.stack.store.get_recommendation(rec["id"]) is None
        assert (await api.get("operator", execution_id_for(rec["id"], False))).status_code == 404


async def test_durations_beyond_sane_bounds_are_refused_with_the_field(api: Api, aws: AwsAccount) -> None:
    spec = {"name": "too-long", "recommendations": [rec_for(api.acme, aws.instance()).model_dump(mode="json")],
            "options": {"rollback_window": "P999999999D"}}
    response = await api.call("operator", "POST", "/api/v1/plans", json=spec)
    assert response.status_code == 422, response.text
    assert any(p["field"].endswith("options.rollback_window") for p in response.json()["detail"])


async def test_an_oversized_body_is_refused_before_it_is_read(api: Api) -> None:
    sent = 0
    chunk = b" " * 2**20

    async def stream() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(100):  # 100 MiB, chunked: no Content-Length to trust, and no token either
            sent += len(chunk)
            yield chunk

    response = await api.http.post(f"{BASE}/execute", content=stream())
    assert response.status_code == 413 and response.json()["error"] == "too_large"
    assert sent <= MAX_BODY_BYTES + 2 * len(chunk)  # read up to the limit, then cut off


async def test_a_declared_oversized_body_is_refused_without_reading_a_byte() -> None:
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append("app")

    async def receive() -> dict[str, Any]:
        reached.append("receive")
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": f"{BASE}/execute",
             "headers": [(b"content-length", str(100 * 2**20).encode())]}
    await BodySizeLimit(app)(scope, receive, send)
    assert reached == []
    assert sent[0]["status"] == 413
