"""The approval page, in a real browser (Debian's chromium driven by Playwright), on the real dev server.

The API is served by uvicorn on a free port beside a worker (the `stack` fixture) and moto. People
sign in with their API tokens: the requester's approve and a viewer's are refused in plain words,
another tenant does not see the execution at all, and an approver approves one execution from its
own page (the link notifications carry) on a phone-sized screen and rejects another from the list.
A running plan's manual step waits on the page: a viewer's confirm is refused in plain words, an
operator confirms it with a comment and evidence from the plan's page, and the plan goes on.
Screenshots are saved under the test's tmp path.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.async_api import Browser, Page, async_playwright
from temporalio.client import WorkflowUpdateFailedError

from domain.plan import PLAN_TERMINAL, PlanSpec, PlanStatus, plan_workflow_id
from domain.policy import Policy, Role
from domain.signing import public_key_text
from domain.status import ExecutionStatus as S
from runtime.approval_key import ApprovalSigner
from runtime.settings import Settings
from starter.api.app import create_app
from starter.api.auth import TokenEntry, TokenStore
from starter.api.deps import Services
from starter.api.server import serve_asgi
from starter.devserver import free_port, port_open
from starter.executions import Executions
from starter.plans import Plans
from store.repository import Store
from tests.conftest import AwsAccount, Stack
from tests.helpers import recommendation, request
from tests.test_plans import _until

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 30_000

#: who -> (token, role, tenant key)
PEOPLE = {
    "bob": ("bob-approver-token-000001", Role.APPROVER, "acme"),
    "alice": ("alice-requester-token-0001", Role.APPROVER, "acme"),
    "vic": ("vic-viewer-token-00000001", Role.VIEWER, "acme"),
    "gina": ("gina-globex-token-0000001", Role.APPROVER, "globex"),
    "olga": ("olga-operator-token-000001", Role.OPERATOR, "acme"),
}


@dataclass
class Served:
    url: str
    acme: str
    stack: Stack
    policy: Policy


#: Signed approvals on (README, Deployment): the page's decisions are signed, the runs' policy has the key.
SIGNING_KEY = Ed25519PrivateKey.generate()


def deployed(signed: str, **settings: Any) -> tuple[Settings, ApprovalSigner | None]:
    """The API's settings and signer, with signed approvals on ("signed") or off ("unsigned")."""
    if signed == "signed":
        return Settings(approval_public_key=public_key_text(SIGNING_KEY), **settings), ApprovalSigner(SIGNING_KEY)
    return Settings(**settings), None


@pytest_asyncio.fixture
async def served(stack: Stack, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """`request.param` (indirect): "signed" serves the page with signed approvals on; default "unsigned"."""
    suffix = uuid.uuid4().hex[:8]
    tenants = {"acme": f"acme-{suffix}", "globex": f"globex-{suffix}"}
    tokens = TokenStore([TokenEntry(subject=who, role=role, customers=[tenants[key]], token=token)
                         for who, (token, role, key) in PEOPLE.items()])
    port = free_port()
    settings, signer = deployed(getattr(request, "param", "unsigned"), web_ui_url="http://ui.test",
                                public_url=f"http://127.0.0.1:{port}")
    executions = Executions(stack.client, stack.task_queue, signer=signer)
    app = create_app(Services(settings=settings, executions=executions, store=stack.store, tokens=tokens))
    stop = asyncio.Event()
    task = asyncio.create_task(serve_asgi(app, "127.0.0.1", port, stop))
    deadline = time.monotonic() + 30
    while not port_open("127.0.0.1", port):
        assert time.monotonic() < deadline and not task.done(), "the API never started listening"
        await asyncio.sleep(0.05)
    try:
        yield Served(f"http://127.0.0.1:{port}", tenants["acme"], stack, settings.policy())
    finally:
        stop.set()
        await task


async def awaiting(served: Served, aws: AwsAccount, savings: float) -> str:
    """An execution requested by alice that waits for a person, once the read model shows it waiting."""
    rec = recommendation("ec2.stop", aws.instance(), savings=savings, customer_id=served.acme)
    req = request(rec, requested_by="alice", auto_approve=False).model_copy(update={"policy": served.policy})
    started = await served.stack.executions.start(req)
    eid = started.execution_id
    assert (await served.stack.executions.wait(eid, timeout=60)).status is S.AWAITING_APPROVAL
    await stored_status(served.stack.store, eid, S.AWAITING_APPROVAL)
    return eid


async def stored_status(store: Store, eid: str, status: S, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (view := await store.get_execution(eid)) is None or view.status is not status:
        assert time.monotonic() < deadline, f"the read model never showed {eid} {status.value}"
        await asyncio.sleep(0.05)


async def sign_in(browser: Browser, url: str, who: str, phone: bool = False) -> Page:
    page = await browser.new_page(viewport=PHONE if phone else {"width": 1100, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(url)
    await page.fill("#token", PEOPLE[who][0])
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_text(f"{who} · {PEOPLE[who][1].value}").wait_for()
    return page


async def decide(page: Page, eid: str, button: str, comment: str = "", *, card: str = "data-execution",
                 evidence: str = "") -> str:
    found = page.locator(f"[{card}='{eid}']")
    if comment:
        await found.locator("textarea").fill(comment)
    if evidence:
        await found.get_by_label("Evidence").fill(evidence)
    await found.get_by_role("button", name=button, exact=True).click()
    flash = page.locator(".flash")
    await flash.wait_for()
    return await flash.inner_text()


@pytest.mark.parametrize("served", ["unsigned", "signed"], indirect=True)
async def test_approving_and_rejecting_on_the_page_with_refusals_in_plain_words(
    served: Served, aws: AwsAccount, tmp_path: Path
) -> None:
    first = await awaiting(served, aws, savings=812.5)
    second = await awaiting(served, aws, savings=42.0)
    await refused_unsigned_when_signed(served, first)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # The requester sees both, told she cannot approve her own; her approve is refused.
            page = await sign_in(browser, f"{served.url}/approvals", "alice")
            body = await page.inner_text("main")
            assert "2 executions" in body and "ec2.stop" in body and "$812.50/month (estimated)" in body
            assert "You requested this change" in body and "Planned steps" in body and "stop i-" in body
            await page.screenshot(path=str(shots / "list-as-requester.png"), full_page=True)
            refused = await decide(page, first, "Approve")
            assert refused == "Refused: you requested this change, so you cannot approve it: another approver must."
            await page.screenshot(path=str(shots / "refused-requester.png"), full_page=True)
            await page.get_by_role("button", name="Sign out").click()
            await page.get_by_role("button", name="Sign in").wait_for()

            # A viewer may look, not decide.
            page = await sign_in(browser, f"{served.url}/approvals/{first}", "vic")
            refused = await decide(page, first, "Approve", "fine by me")
            assert refused.startswith("Refused: vic has the role viewer; to approve a change needs the role approver")

            # Another tenant does not see it, not even by its link.
            page = await sign_in(browser, f"{served.url}/approvals", "gina")
            assert "Nothing awaits your decision." in await page.inner_text("main")
            await page.goto(f"{served.url}/approvals/{first}")
            assert f"There is no execution {first} that you may see." in await page.inner_text("main")

            # The approver, on a phone, from the link in the notification: approves with a comment.
            page = await sign_in(browser, f"{served.url}/approvals/{first}", "bob", phone=True)
            assert await page.locator("[data-execution]").count() == 1
            assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scroll
            await page.screenshot(path=str(shots / "phone-one-approval.png"), full_page=True)
            approved = await decide(page, first, "Approve", "idle since March")
            assert approved == "Approved by bob: idle since March"
            await page.screenshot(path=str(shots / "phone-approved.png"), full_page=True)

            # ... and rejects the other from the list.
            await page.goto(f"{served.url}/approvals")
            assert await decide(page, second, "Reject", "still needed") == "Rejected by bob: still needed"
        finally:
            await browser.close()
    executions = served.stack.executions
    view = await executions.wait(first, timeout=60)
    assert view.status is S.COMPLETED, view.reason
    assert [(a.actor, a.comment) for a in view.approvals if a.accepted] == [("bob", "idle since March")]
    assert (await executions.wait(second, timeout=60)).status is S.REJECTED
    trail = await served.stack.store.list_approvals(first)
    assert ("alice", False, "page") in {(a.actor, a.accepted, a.via) for a in trail}
    assert aws.instance_state(view.resource_id)[0] == "stopped"
    assert sorted(p.name for p in shots.iterdir()) == [
        "list-as-requester.png", "phone-approved.png", "phone-one-approval.png", "refused-requester.png"]


async def refused_unsigned_when_signed(served: Served, eid: str) -> None:
    """With signed approvals on, the stock CLI's update is refused: what the page decides below, it signs."""
    if served.policy.approval_public_keys:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await served.stack.client.get_workflow_handle(eid).execute_update(
                "approve", {"actor": "bob", "role": "approver"})
        assert "unsigned" in str(refused.value.cause)


async def test_sign_in_and_forms_are_guarded(tmp_path: Path) -> None:
    """Unknown tokens, forms without their CSRF token and redirects elsewhere are refused (no browser needed).
    A store of its own: the session's shared one holds other tests' executions awaiting approval."""
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'page.db'}")
    try:
        await _guarded(store)
    finally:
        await store.close()


async def _guarded(store: Store) -> None:
    tokens = TokenStore([TokenEntry(subject="bob", role=Role.APPROVER, customers=["acme"], token=PEOPLE["bob"][0])])
    app = create_app(Services(settings=Settings(), executions=None, store=store, tokens=tokens))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://page.test") as http:
        first = await http.get("/approvals/exec-x")
        assert first.status_code == 200 and 'name="next" value="/approvals/exec-x"' in first.text
        csrf = http.cookies["reclaim_login_csrf"]
        wrong = await http.post("/approvals/login", data={"token": "not-a-token", "csrf": csrf})
        assert wrong.status_code == 401 and "That token is not known here." in wrong.text
        forged = await http.post("/approvals/login", data={"token": PEOPLE["bob"][0], "csrf": "guess"})
        assert forged.status_code == 403 and "reclaim_session" not in http.cookies
        csrf = http.cookies["reclaim_login_csrf"]
        signed = await http.post("/approvals/login", data={"token": PEOPLE["bob"][0], "csrf": csrf,
                                                           "next": "//evil.example/approvals"})
        assert signed.status_code == 303 and signed.headers["location"] == "/approvals"
        assert "httponly" in signed.headers["set-cookie"].lower() and "samesite=strict" in signed.headers["set-cookie"].lower()
        no_csrf = await http.post("/approvals/exec-x/decide", data={"decision": "approve"})
        assert no_csrf.status_code == 303
        shown = await http.get("/approvals")
        assert "That form had expired: nothing was decided." in shown.text and "Nothing awaits your decision." in shown.text
        again = await http.get("/approvals")
        assert "That form had expired" not in again.text  # a result is shown once
        out = await http.post("/approvals/logout", data={"csrf": "wrong"})
        assert out.status_code == 303
        assert 'action="/approvals/login"' in (await http.get("/approvals")).text


@pytest.mark.parametrize("signed", ["unsigned", "signed"])
async def test_a_plans_dry_run_is_approved_on_the_page(stack: Stack, aws: AwsAccount, signed: str) -> None:
    """Without a browser: the plan's card is listed and linked, its approve goes through the plan's update
    (signed, with signed approvals on: the plan started by the API carries the key)."""
    suffix = uuid.uuid4().hex[:8]
    acme = f"acme-{suffix}"
    tokens = TokenStore([TokenEntry(subject="bob", role=Role.APPROVER, customers=[acme], token=PEOPLE["bob"][0]),
                         TokenEntry(subject="olga", role=Role.OPERATOR, customers=[acme], token="olga-operator-token-01")])
    settings, signer = deployed(signed)
    app = create_app(Services(settings=settings, executions=Executions(stack.client, stack.task_queue, signer=signer),
                              store=stack.store, tokens=tokens))
    rec = recommendation("ec2.stop", aws.instance(), customer_id=acme)
    plan_id = f"p-{suffix}"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://page.test") as http:
        created = await http.post("/api/v1/plans", headers={"Authorization": "Bearer olga-operator-token-01"},
                                  json={"id": plan_id, "dry_run": True, "options": {"rollback_window": "PT0S"},
                                        "recommendations": [rec.model_dump(mode="json", exclude_none=True)]})
        assert created.status_code == 202, created.text
        deadline = time.monotonic() + 120
        while (view := await stack.store.plans.get(plan_id)) is None or view.status.value != "AWAITING_APPROVAL":
            assert time.monotonic() < deadline, f"plan {plan_id} never awaited approval"
            await asyncio.sleep(0.1)
        if signed == "signed":  # the stock CLI's approval of the plan: refused
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await stack.client.get_workflow_handle(plan_workflow_id(plan_id)).execute_update(
                    "approve", {"actor": "bob", "role": "approver"})
            assert "unsigned" in str(refused.value.cause)
        await http.get(f"/approvals/plans/{plan_id}")
        await http.post("/approvals/login", data={"token": PEOPLE["bob"][0], "csrf": http.cookies["reclaim_login_csrf"],
                                                  "next": f"/approvals/plans/{plan_id}"})
        listed = await http.get("/approvals")
        assert f'data-plan="{plan_id}"' in listed.text and "1 plan." in listed.text
        page = await http.get(f"/approvals/plans/{plan_id}")
        assert "its dry run awaits approval" in page.text and "$50.00/month (estimated)" in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        decided = await http.post(f"/approvals/plans/{plan_id}/decide", follow_redirects=True, data={
            "csrf": csrf.group(1), "decision": "approve", "comment": "go", "back": f"/approvals/plans/{plan_id}"})
        assert f"Plan {plan_id}: " in decided.text and "flash ok" in decided.text, decided.text[-1500:]
    deadline = time.monotonic() + 120
    while (view := await stack.store.plans.get(plan_id)) is None or view.approval is None:
        assert time.monotonic() < deadline, "the plan's approval never reached the store"
        await asyncio.sleep(0.1)
    assert (view.approval.actor, view.approval.comment) == ("bob", "go")


INSTRUCTIONS = ("Tell **#batch-team** the hosts stop at 18:00. <script>document.title='pwned'</script>\n\n"
                "[the dashboard](https://grafana.example.com/d/batch) [not this](javascript:alert(1))")


@pytest.mark.parametrize("served", ["unsigned", "signed"], indirect=True)
async def test_a_manual_step_is_confirmed_on_the_page_and_the_plan_goes_on(
    served: Served, aws: AwsAccount, tmp_path: Path
) -> None:
    instance = aws.instance("m5.large")
    rec = recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"}, customer_id=served.acme)
    plans = Plans(served.stack.client, served.stack.task_queue, served.stack.store)
    spec = PlanSpec.model_validate({
        "recommendations": [rec.model_dump(mode="json"), {"kind": "manual", "id": "tell-team", "role": "operator",
                                                          "timeout": "PT10M", "instructions": INSTRUCTIONS}],
        "strategy": "waves", "options": {"rollback_window": "PT0S", "step_timeout": "PT20S"},
        "waves": [{"name": "announce", "items": ["tell-team"]},
                  {"name": "stop", "items": [rec.id], "depends_on": ["announce"]}]})
    plan_id = (await plans.submit(spec, requested_by="alice", policy=served.policy)).plan_id
    await _until(plans, plan_id, lambda v: [m.status for m in v.manual] == ["AWAITING_CONFIRMATION"])
    if served.policy.approval_public_keys:  # the stock CLI's confirm: refused; the page's below is signed
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await served.stack.client.get_workflow_handle(plan_workflow_id(plan_id)).execute_update(
                "confirm", {"item": "tell-team", "actor": "olga", "role": "operator"})
        assert "unsigned" in str(refused.value.cause)
    card = f"{plan_id}/tell-team"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # A viewer sees the waiting step (instructions as Markdown, their HTML as text) and may not answer.
            page = await sign_in(browser, f"{served.url}/approvals", "vic")
            step = page.locator(f"[data-manual='{card}']")
            text = await step.inner_text()
            assert "1 manual step." in await page.inner_text("main")
            assert "Who may answer\noperator or above" in text and "wave announce" in text and "Deadline" in text
            assert await step.locator(".instructions strong").inner_text() == "#batch-team"
            assert "<script>document.title='pwned'</script>" in text and await page.title() == "Reclaim approvals"
            links = [await a.get_attribute("href") for a in await step.locator(".instructions a").all()]
            assert links == ["https://grafana.example.com/d/batch"]  # the javascript: link stays text
            assert "only operator or above may confirm or fail this step" in text
            refused = await decide(page, card, "Confirm", "done", card="data-manual")
            assert refused == ("Refused: vic has the role viewer; to confirm manual step tell-team needs the role "
                               "operator or above.")

            # The operator, from the plan's own page: confirms with a comment and evidence.
            page = await sign_in(browser, f"{served.url}/approvals/plans/{plan_id}", "olga", phone=True)
            assert await page.locator("[data-manual]").count() == 1
            assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            await page.screenshot(path=str(tmp_path / "manual-step.png"), full_page=True)
            confirmed = await decide(page, card, "Confirm", "told them", card="data-manual",
                                     evidence="https://chat.example.com/m/42")
            assert confirmed == "Manual step tell-team confirmed by olga: told them"
            assert "waits for confirmation" not in await page.inner_text("main")
        finally:
            await browser.close()
    done = await plans.wait(plan_id, until=PLAN_TERMINAL, timeout=120)
    assert done.status is PlanStatus.COMPLETED, done.reason
    assert done.counts == {"CONFIRMED": 1, S.COMPLETED.value: 1}
    assert [(m.decided_by, m.comment, m.evidence) for m in done.manual] == [
        ("olga", "told them", "https://chat.example.com/m/42")]
    assert aws.instance_state(instance)[0] == "stopped"
