"""Property-based: every operation of the app's own OpenAPI document, fed generated requests.

Schemathesis generates valid (positive) and invalid (negative) requests per operation
(derandomized, a bounded number each); they are sent as the all-customers admin to the app
wired to a real worker, the dev server, SQLite and moto, and every answer must be no 5xx and
conform to the document (status code, content type, headers, body schema).

Generation and sending are split: Hypothesis only collects the cases (no I/O), then the test
sends them on its own event loop through httpx's ASGI transport, because the Temporal client
and the database engine belong to that loop (schemathesis's ASGI client would run the app on
another one).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.testing import WorkflowEnvironment

from activities.aws import SessionFactory
from domain.policy import Role
from runtime.settings import Settings
from starter.api.app import create_app
from starter.api.auth import TokenEntry, TokenStore, hash_token
from starter.api.deps import Services
from starter.executions import Executions
from store.repository import Store
from tests.conftest import ACCOUNT, REGION, AwsAccount
from tests.helpers import recommendation, request
from worker import build_worker

MAX_EXAMPLES = 25
BASE_URL = "http://api.test"
ROOT_TOKEN = "schema-root-admin-token-0001"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Operations that answer some schema-violating input with 200 by design, so `negative_data_rejection`
#: does not apply: the bulk import reports each invalid item in `errors` and imports the rest.
PARTIAL_ACCEPTANCE = {"POST /api/v1/recommendations"}
#: Operations that stream until their execution settles: a generated id never names a live one,
#: but a hang must fail the case, not the run.
REQUEST_TIMEOUT = 30.0

SCHEMA = schemathesis.openapi.from_dict(create_app().openapi())


def _operations() -> dict[str, APIOperation]:
    found: dict[str, APIOperation] = {}
    for result in SCHEMA.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # the document itself is broken
        found[result.ok().label] = result.ok()
    return found


OPERATIONS = _operations()


def generate(label: str, mode: GenerationMode) -> list[Case]:
    """The cases Hypothesis would feed a test of this operation (examples first), collected, not sent."""
    cases: list[Case] = []

    @given(case=OPERATIONS[label].as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def collect(case: Case) -> None:
        cases.append(case)

    try:
        collect()
    except Unsatisfiable:  # nothing to negate (an operation without parameters or body)
        assert mode is GenerationMode.NEGATIVE, label
    return cases


@dataclass
class Env:
    http: httpx.AsyncClient
    aws: AwsAccount
    execution_ids: list[str]  # real executions: one COMPLETED, one AWAITING_APPROVAL


@pytest_asyncio.fixture(scope="module")
async def env(
    temporal_env: WorkflowEnvironment, store: Store, moto_endpoint: str, activity_executor: Any
) -> AsyncIterator[Env]:
    task_queue = f"tq-schema-{uuid.uuid4()}"
    executions = Executions(temporal_env.client, task_queue)
    worker = build_worker(temporal_env.client, task_queue=task_queue, sessions=SessionFactory(endpoint_url=moto_endpoint),
                          store=store, executor=activity_executor, max_concurrent_activities=16)
    tokens = TokenStore([TokenEntry(subject="schema-root", role=Role.ADMIN, customers=["*"],
                                    sha256=hash_token(ROOT_TOKEN))])
    app = create_app(Services(settings=Settings(web_ui_url="http://ui.test"), executions=executions, store=store,
                              tokens=tokens))
    # A 500 must come back as a response to check, not as an exception out of the transport.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    aws = AwsAccount(moto_endpoint)
    async with worker, httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        ids = []
        for auto_approve in (True, False):
            rec = recommendation("ec2.stop", aws.instance(), customer_id=f"schema-{uuid.uuid4().hex[:8]}")
            started = await executions.start(request(rec, requested_by="someone-else", auto_approve=auto_approve))
            await executions.wait(started.execution_id, timeout=120)
            ids.append(started.execution_id)
        yield Env(client, aws, ids)


def _aim(case: Case, index: int, env: Env) -> None:
    """Point every other valid case at something real, so success answers are checked too.

    Random ids never exist and random kinds are never registered: without this, only error
    answers would be validated. Event streams are left alone (a live one streams until it settles).
    """
    if index % 2 or case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return
    if "execution_id" in (case.path_parameters or {}) and not case.operation.path.endswith("/events"):
        case.path_parameters["execution_id"] = env.execution_ids[(index // 2) % len(env.execution_ids)]
    elif isinstance(case.body, dict) and isinstance(rec := case.body.get("recommendation"), dict):
        rec.update(kind="ec2.stop", params={}, account_id=ACCOUNT, region=REGION, resource_id=env.aws.instance())


def _negates_headers(case: Case) -> bool:
    """A negative case whose invalid part is a header: the bearer token (missing or malformed) is the point."""
    meta = case.meta
    if meta is None or meta.generation.mode is not GenerationMode.NEGATIVE:
        return False
    info = meta.components.get(ParameterLocation.HEADER)
    return info is not None and info.mode is GenerationMode.NEGATIVE


def _wire(case: Case) -> requests.PreparedRequest | None:
    """The request exactly as schemathesis would put it on the wire (None: not sendable at all).

    Every case is sent as the all-customers admin, except those negating the Authorization header.
    """
    kwargs = case.as_transport_kwargs(base_url=BASE_URL)
    headers = dict(kwargs.get("headers") or {})
    if not _negates_headers(case):
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        headers["Authorization"] = f"Bearer {ROOT_TOKEN}"
    known = {k: kwargs[k] for k in ("method", "url", "params", "data", "json", "cookies", "files") if k in kwargs}
    try:
        return requests.Request(headers=headers, **known).prepare()
    except (ValueError, requests.RequestException):
        return None  # e.g. a header value no HTTP client can send


async def _send(http: httpx.AsyncClient, wire: requests.PreparedRequest) -> httpx.Response | None:
    body = wire.body.encode() if isinstance(wire.body, str) else wire.body
    assert body is None or isinstance(body, bytes), type(body)  # no streamed or multipart-file bodies here
    headers = {k: v.decode("latin-1") if isinstance(v, bytes) else v for k, v in wire.headers.items()}
    try:
        return await asyncio.wait_for(
            http.request(str(wire.method), str(wire.url), headers=headers, content=body),
            REQUEST_TIMEOUT,
        )
    except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
        return None


@pytest.mark.parametrize("label", list(OPERATIONS))
async def test_operation_conforms_to_its_schema(env: Env, label: str) -> None:
    failures: list[str] = []
    sent = 0
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for index, case in enumerate(generate(label, mode)):
            _aim(case, index, env)
            wire = _wire(case)
            response = None if wire is None else await _send(env.http, wire)
            if wire is None or response is None:
                continue
            sent += 1
            checks = CHECKS
            if mode is GenerationMode.NEGATIVE and label not in PARTIAL_ACCEPTANCE:
                checks = [*CHECKS, negative_data_rejection]
            try:
                case.validate_response(response, checks=checks)
            except Exception as exc:
                failures.append(f"{mode.value} {wire.method} {wire.url} body={wire.body!r}\n"
                                f"-> {response.status_code} {response.text[:500]}\n{exc}")
    assert sent >= 1, f"no generated request for {label} could be sent"
    assert not failures, f"{len(failures)} of {sent} requests failed:\n\n" + "\n\n".join(failures[:5])


def test_every_error_status_is_documented_with_the_error_shape() -> None:
    """Every 4xx answer in the document is `{error, detail}`; every bearer-protected operation lists 401 and 403."""
    document = create_app().openapi()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    protected = 0
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                if status.startswith("4"):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
            if op.get("security"):
                protected += 1
                assert {"401", "403"} <= set(op["responses"]), (method, path)
    assert protected >= 7  # at least the seven executions operations
