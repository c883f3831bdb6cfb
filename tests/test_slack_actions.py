"""Deciding from Slack: the approval request's buttons call back, signed, and the same update decides.

On the real dev server: a worker whose notify file sends Slack messages to a local receiver, the
API app (httpx's ASGI transport) with a signing secret and an identities file. The message that
arrives is clicked: refused for a stranger, a viewer, the requester and another tenant (each
reason shown in the rewritten message, nothing decided), then approved by an approver; the same
callback replayed, a tampered one and an expired one answer 401 and change nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client, WorkflowUpdateFailedError

from activities.aws import SessionFactory
from activities.notify.config import parse_notify_file
from activities.notify.delivery import NotifyActivities
from activities.notify.links import LinkBase
from activities.notify.slack import APPROVE, REJECT
from domain.notifications import DeliveryInput, Links
from domain.policy import Policy
from domain.signing import public_key_text
from domain.status import ExecutionStatus as S
from runtime.approval_key import ApprovalSigner
from runtime.settings import Settings
from starter.api.app import create_app
from starter.api.auth import TokenStore
from starter.api.deps import Services
from starter.api.identities import IdentitiesFileError, load_identities, parse_identities
from starter.api.slack import SlackVerifier, decided_message, decision_of, refused_message, signature
from starter.executions import Executions
from store.repository import Store
from tests.conftest import AwsAccount
from tests.helpers import recommendation, request
from tests.notify_support import HttpReceiver, Received, approval_request, catch_all_notify_file

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
PUBLIC = "https://reclaim.example.test"
UI = "http://ui.example.test"
SLACK_URL_ENV = "RECLAIM_TEST_SLACK_WEBHOOK_URL"
ACTIONS = "/api/v1/integrations/slack/actions"

#: Slack user id -> (Reclaim user, role, customer key); "acme" is the test's tenant, "other" another one.
PEOPLE = {
    "UAPPROVER1": ("bob", "approver", "acme"),
    "UVIEWER01": ("vic", "viewer", "acme"),
    "UREQUEST1": ("alice", "approver", "acme"),  # alice requests the executions below
    "UGLOBEX01": ("gina", "approver", "other"),
}


# ---- the signature, the click, the message: pure -----------------------------------------------------


def test_a_signature_is_accepted_once_within_five_minutes() -> None:
    verifier, body, now = SlackVerifier(SECRET), b"payload=%7B%7D", 1_800_000_000.0
    ts = str(int(now) - 10)
    good = signature(SECRET, ts, body)
    assert good.startswith("v0=") and len(good) == 67
    assert verifier.refusal(ts, good, body + b"x", now) == "the signature does not match the body"
    assert verifier.refusal(ts, "v0=" + "0" * 64, body, now) == "the signature does not match the body"
    assert verifier.refusal(str(int(now) + 10), good, body, now) == "the signature does not match the body"
    assert verifier.refusal(ts, good, body, now) is None
    assert verifier.refusal(ts, good, body, now + 1) == "this callback was already received (a replay)"
    old = str(int(now) - 301)
    assert "more than 5 minutes" in str(verifier.refusal(old, signature(SECRET, old, body), body, now))
    future = str(int(now) + 301)
    assert "more than 5 minutes" in str(verifier.refusal(future, signature(SECRET, future, body), body, now))
    assert verifier.refusal(None, good, body, now) == verifier.refusal(ts, "", body, now)
    assert "not a Unix time" in str(verifier.refusal("12e3", good, body, now))
    assert "not configured" in str(SlackVerifier(None).refusal(ts, good, body, now))
    # Seen signatures are forgotten once their timestamp is out of the window anyway.
    verifier.refusal(str(int(now) + 400), signature(SECRET, str(int(now) + 400), body), body, now + 400)
    assert good not in verifier._seen


def test_only_approve_and_reject_clicks_decide() -> None:
    click = {"type": "block_actions", "actions": [{"action_id": "reclaim_open_page", "url": "x"},
                                                  {"action_id": APPROVE, "value": "exec-1"}]}
    assert decision_of(click) == (True, "exec-1")
    assert decision_of({**click, "actions": [{"action_id": REJECT, "value": "exec-2"}]}) == (False, "exec-2")
    assert decision_of({**click, "actions": [{"action_id": "reclaim_open_page"}]}) is None
    assert decision_of({**click, "type": "view_submission"}) is None
    assert decision_of({"type": "block_actions", "actions": "nope"}) is None
    assert decision_of({"type": "block_actions", "actions": [{"action_id": APPROVE, "value": ""}]}) is None


def test_a_decision_takes_the_buttons_away_a_refusal_keeps_them() -> None:
    original = {"text": "t", "blocks": [
        {"type": "header"},
        {"type": "actions", "elements": [{"action_id": APPROVE}, {"action_id": REJECT},
                                         {"action_id": "reclaim_open_page", "url": "u"}]},
    ]}
    refused = refused_message(original, "no")
    assert refused["replace_original"] is True and refused["blocks"][:2] == original["blocks"]
    again = refused_message(refused, "still no")  # the outcome line is replaced, not stacked
    assert [b.get("block_id") for b in again["blocks"]].count("reclaim:outcome") == 1
    decided = decided_message(again, "approved by bob")
    elements = [e["action_id"] for b in decided["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert elements == ["reclaim_open_page"] and decided["blocks"][-1]["text"]["text"] == "approved by bob"
    assert refused_message(None, "no") == {"replace_original": False, "response_type": "ephemeral", "text": "no"}


def test_the_identities_file_names_the_line_and_field_of_each_problem(tmp_path: Path) -> None:
    good = parse_identities("slack:\n  U024BE7LH: {user: bob, role: approver, customers: [acme]}\n")
    bob = good.for_slack("U024BE7LH")
    assert bob is not None and bob.subject == "bob" and bob.sees("acme") and not bob.sees("globex")
    assert good.for_slack("UNKNOWN1") is None
    with pytest.raises(IdentitiesFileError) as bad:
        parse_identities("slack:\n  U024BE7LH:\n    user: bob\n    role: aprover\n    customers: []\n", "ids.yaml")
    assert str(bad.value).startswith("ids.yaml:4: slack.U024BE7LH.role: Input should be")
    assert "ids.yaml:5: slack.U024BE7LH.customers: List should have at least 1 item" in str(bad.value)
    with pytest.raises(IdentitiesFileError, match=r"^ids.yaml:2: slack.bob: String should match pattern"):
        parse_identities("slack:\n  bob: {user: bob, role: approver, customers: [acme]}\n", "ids.yaml")
    with pytest.raises(IdentitiesFileError, match=r"^ids.yaml:1: not valid YAML"):
        parse_identities("slack: [", "ids.yaml")
    with pytest.raises(IdentitiesFileError, match="cannot read it"):
        load_identities(tmp_path / "missing.yaml")
    assert load_identities(None).slack == {}


def test_reclaim_api_refuses_a_malformed_identities_file_in_one_line(tmp_path: Path) -> None:
    """Checked before serving (and before Temporal is sought): one line naming the line and field,
    exit 1, never uvicorn's start-up traceback."""
    from typer.testing import CliRunner

    from starter.cli import app

    bad = tmp_path / "ids.yaml"
    bad.write_text("slack:\n  U024BE7LH:\n    user: bob\n    role: aprover\n    customers: [acme]\n")
    got = CliRunner().invoke(app, ["api", "--port", "1"], env={
        "RECLAIM_IDENTITIES_FILE": str(bad), "TEMPORAL_ADDRESS": "127.0.0.1:1"})
    assert got.exit_code == 1, got.output
    assert f"{bad}:4: slack.U024BE7LH.role: Input should be" in got.stderr
    assert "Traceback" not in got.output and got.stderr.count("\n") <= 2


async def test_the_app_refuses_to_start_with_a_malformed_identities_file(tmp_path: Path) -> None:
    path = tmp_path / "identities.yaml"
    path.write_text("slack:\n  U024BE7LH: {user: bob, role: boss, customers: [acme]}\n")
    services = Services(settings=Settings(identities_file=path), executions=None,  # type: ignore[arg-type]
                        store=None, tokens=TokenStore([]))  # type: ignore[arg-type]
    app = create_app(services)
    with pytest.raises(IdentitiesFileError, match=r"identities.yaml:2: slack.U024BE7LH.role"):
        async with app.router.lifespan_context(app):
            pass


# ---- links, added where the message is sent ------------------------------------------------------------


async def test_links_to_the_web_ui_and_the_approval_page_are_added_at_delivery(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    links = LinkBase(public_url=PUBLIC + "/", web_ui_url=UI, namespace="prod")
    notify = NotifyActivities.from_path(catch_all_notify_file(tmp_path, receiver.url), links=links)
    bare = approval_request(links=Links(), subject_id="exec-rec 1")
    await notify.deliver(DeliveryInput(notification=bare, channel="audit"))
    sent = json.loads(receiver.requests[-1].body)["notification"]["links"]
    assert sent == {"web_ui": f"{UI}/namespaces/prod/workflows/exec-rec%201",
                    "approval_page": f"{PUBLIC}/approvals/exec-rec%201", "report": None}  # a plan's end links its report
    # A link the notification carries is kept; a notification asking nothing gets no approval page.
    kept = links.fill(approval_request(links=Links(approval_page="https://elsewhere/x")))
    assert kept.links.approval_page == "https://elsewhere/x" and kept.links.web_ui is not None
    done = links.fill(approval_request(event="completed", links=Links()))
    assert done.links.approval_page is None and done.links.web_ui is not None
    plan = links.fill(approval_request(event="plan_awaiting_approval", subject="plan", subject_id="p1", links=Links()))
    assert plan.links == Links(web_ui=f"{UI}/namespaces/prod/workflows/plan%3Ap1",
                               approval_page=f"{PUBLIC}/approvals/plans/p1")
    settings = Settings(notify_file=tmp_path / "notify.yaml", public_url=PUBLIC, web_ui_url=UI)
    configured = settings.notify()
    assert configured is not None and configured.links == LinkBase(PUBLIC, UI, "default")
    assert Settings(api_host="10.0.0.5", api_port=9000).public_base() == "http://10.0.0.5:9000"


# ---- on the dev server ----------------------------------------------------------------------------------


@dataclass
class SlackApp:
    http: httpx.AsyncClient
    executions: Executions
    store: Store
    receiver: HttpReceiver
    acme: str
    policy: Policy

    def slack_messages(self) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.receiver.requests if r.path == "/slack"]

    def responses(self, tag: str) -> list[Received]:
        return [r for r in self.receiver.requests if r.path == f"/response/{tag}"]


@pytest_asyncio.fixture
async def slack_app(client: Client, sessions: SessionFactory, store: Store, aws: AwsAccount, tmp_path: Path,
                    activity_executor: ThreadPoolExecutor, receiver: HttpReceiver,
                    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> AsyncIterator[SlackApp]:
    """`signed` (the indirect parameter): the API deployed with signed approvals on (README, Deployment)."""
    from worker import build_worker

    signed = getattr(request, "param", "unsigned") == "signed"
    key = Ed25519PrivateKey.generate()
    keys = {"approval_public_key": public_key_text(key)} if signed else {}

    suffix = uuid.uuid4().hex[:8]
    acme, other = f"acme-{suffix}", f"globex-{suffix}"
    monkeypatch.setenv(SLACK_URL_ENV, f"{receiver.url}/slack")
    notify_file = parse_notify_file(f"channels:\n  finops:\n    type: slack\n    webhook_url: env:{SLACK_URL_ENV}\n"
                                    "rules:\n  - events: [approval_requested]\n    channels: [finops]\n")
    notify = NotifyActivities(notify_file, links=LinkBase(PUBLIC, UI))
    identities = tmp_path / "identities.yaml"
    identities.write_text("slack:\n" + "".join(
        f"  {uid}: {{user: {user}, role: {role}, customers: [{acme if key == 'acme' else other}]}}\n"
        for uid, (user, role, key) in PEOPLE.items()))
    task_queue = f"slack-{uuid.uuid4()}"
    worker = build_worker(client, task_queue=task_queue, sessions=sessions, store=store, executor=activity_executor,
                          max_concurrent_activities=16, notify=notify)
    executions = Executions(client, task_queue, signer=ApprovalSigner(key) if signed else None)
    settings = Settings(slack_signing_secret=SECRET, identities_file=identities, public_url=PUBLIC, web_ui_url=UI,
                        **keys)
    app = create_app(Services(settings=settings, executions=executions, store=store, tokens=TokenStore([])))
    async with worker, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as http:
        yield SlackApp(http, executions, store, receiver, acme, settings.policy())


async def _until(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)
    return found


def _callback(app: SlackApp, message: dict[str, Any], user: str, action: str, tag: str) -> bytes:
    """The form body Slack posts when `user` clicks `action` on `message`."""
    button = next(e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]
                  if e.get("action_id") == action)
    payload = {"type": "block_actions", "user": {"id": user, "username": user.lower()},
               "actions": [{"action_id": action, "block_id": "b", "value": button["value"], "type": "button"}],
               "response_url": f"{app.receiver.url}/response/{tag}", "message": message,
               "container": {"type": "message"}, "team": {"id": "T1"}}
    return urlencode({"payload": json.dumps(payload)}).encode()


async def _post(app: SlackApp, body: bytes, *, ts: int | None = None, sign: bytes | None = None) -> httpx.Response:
    stamp = str(ts if ts is not None else int(time.time()))
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": stamp,
               "X-Slack-Signature": signature(SECRET, stamp, sign if sign is not None else body)}
    return await app.http.post(ACTIONS, content=body, headers=headers)


async def _shown(app: SlackApp, tag: str) -> dict[str, Any]:
    got = await _until(f"the Slack message updated via response {tag}", lambda: app.responses(tag))
    assert len(got) == 1
    body: dict[str, Any] = json.loads(got[0].body)
    return body


async def _awaiting(app: SlackApp, aws: AwsAccount) -> tuple[str, dict[str, Any]]:
    rec = recommendation("ec2.stop", aws.instance(), customer_id=app.acme)
    req = request(rec, requested_by="alice", auto_approve=False).model_copy(update={"policy": app.policy})
    started = await app.executions.start(req)
    eid = started.execution_id
    message = await _until("the approval request in Slack", lambda: next(
        (m for m in app.slack_messages() if any(e.get("value") == eid for b in m["blocks"] if b["type"] == "actions"
                                                for e in b["elements"])), None))
    return eid, message


@pytest.mark.parametrize("slack_app", ["unsigned", "signed"], indirect=True)
async def test_slack_buttons_decide_through_the_same_update_and_refusals_are_shown(
    slack_app: SlackApp, aws: AwsAccount
) -> None:
    app = slack_app
    eid, message = await _awaiting(app, aws)
    if app.policy.approval_public_keys:  # signed approvals on: the stock CLI's update is refused...
        with pytest.raises(WorkflowUpdateFailedError, match="Workflow update failed") as refused:
            await app.executions.client.get_workflow_handle(eid).execute_update(
                "approve", {"actor": "bob", "role": "approver"})
        assert "unsigned" in str(refused.value.cause)  # ...and the Slack callback below signs
    # The approval request links the approval page and the Web UI, built at delivery.
    urls = {e["action_id"]: e.get("url") for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]}
    assert urls["reclaim_open_page"] == f"{PUBLIC}/approvals/{eid}"
    assert urls["reclaim_open_web_ui"] == f"{UI}/namespaces/default/workflows/{eid}"

    refusals = {
        "UNKNOWN99": "is not a known Reclaim approver",
        "UVIEWER01": "vic has the role viewer; to approve a change needs the role approver or admin",
        "UREQUEST1": "you requested this change, so you cannot approve it: another approver must",
        "UGLOBEX01": f"gina may not decide for customer {app.acme}",
    }
    for user, reason in refusals.items():
        answer = await _post(app, _callback(app, message, user, APPROVE, user))
        assert answer.status_code == 200, answer.text
        shown = await _shown(app, user)
        text = shown["blocks"][-1]["text"]["text"]
        assert f"<@{user}>: refused: " in text and reason in text, text
        assert any(e["action_id"] == APPROVE for b in shown["blocks"] if b["type"] == "actions" for e in b["elements"])
    assert (await app.executions.status(eid)).status is S.AWAITING_APPROVAL
    # The requester's refused attempt went to the workflow's validator, and is in the audit trail as from Slack.
    trail = await app.store.list_approvals(eid)
    assert [(a.actor, a.accepted, a.via) for a in trail] == [("alice", False, "slack")]

    approve = _callback(app, message, "UAPPROVER1", APPROVE, "bob")
    stamp = int(time.time())
    answer = await _post(app, approve, ts=stamp)
    assert answer.status_code == 200, answer.text
    shown = await _shown(app, "bob")
    assert shown["replace_original"] is True
    assert f"{eid} approved by bob: from Slack (UAPPROVER1) (<@UAPPROVER1> in Slack)" in shown["text"]
    assert not any(e["action_id"] in (APPROVE, REJECT) for b in shown["blocks"] if b["type"] == "actions"
                   for e in b["elements"])
    view = await app.executions.wait(eid, timeout=60)
    assert view.status is S.COMPLETED, view.reason
    assert [(a.actor, a.accepted) for a in view.approvals if a.accepted] == [("bob", True)]

    # Replayed, tampered, expired: 401, nothing posted, nothing recorded.
    before = (len(app.receiver.requests), len(await app.store.list_approvals(eid)))
    replay = await _post(app, approve, ts=stamp)
    assert replay.status_code == 401 and replay.json() == {
        "error": "unauthenticated", "detail": "this callback was already received (a replay)"}
    tampered = _callback(app, message, "UAPPROVER1", REJECT, "tampered")
    assert (await _post(app, tampered, sign=approve)).json()["detail"] == "the signature does not match the body"
    expired = await _post(app, _callback(app, message, "UAPPROVER1", REJECT, "old"), ts=int(time.time()) - 301)
    assert expired.status_code == 401 and "more than 5 minutes" in expired.json()["detail"]
    unsigned = await app.http.post(ACTIONS, content=tampered,
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert unsigned.status_code == 401
    assert (len(app.receiver.requests), len(await app.store.list_approvals(eid))) == before


async def test_a_slack_reject_rejects_and_a_link_click_does_nothing(slack_app: SlackApp, aws: AwsAccount) -> None:
    app = slack_app
    eid, message = await _awaiting(app, aws)
    link = _callback(app, message, "UAPPROVER1", APPROVE, "link").replace(
        APPROVE.encode(), b"reclaim_open_page")
    assert (await _post(app, link)).status_code == 200
    garbage = await _post(app, b"payload=not-json")
    assert garbage.status_code == 422 and garbage.json()["error"] == "invalid_request"
    assert (await _post(app, _callback(app, message, "UAPPROVER1", REJECT, "no"))).status_code == 200
    shown = await _shown(app, "no")
    assert f"{eid} rejected by bob" in shown["text"]
    view = await app.executions.wait(eid, timeout=60)
    assert view.status is S.REJECTED and "rejected by bob" in (view.reason or "")
    assert app.responses("link") == []
