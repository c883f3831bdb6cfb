"""Executions tell people: the notify file's channels hear of an approval request, a decision and
the outcome, on the real dev server; a channel that refuses never holds up the change."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta
from pathlib import Path

import boto3
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHistory

from activities.aws import SessionFactory
from activities.notify.delivery import NotifyActivities
from activities.notify.links import LinkBase
from activities.notify.signature import HEADER, verify_signature
from domain.execution import ApprovalInput
from domain.policy import Role
from domain.status import ExecutionStatus as S
from starter.executions import Executions
from store.repository import Store
from tests.conftest import REGION, AwsAccount
from tests.helpers import activity_names, recommendation, request
from tests.notify_support import HttpReceiver, MailBox, Received, catch_all_notify_file, smtp_receiver
from worker import build_worker

SECRET_ENV = "RECLAIM_TEST_WEBHOOK_SECRET"



@pytest_asyncio.fixture
async def told(client: Client, sessions: SessionFactory, store: Store, aws: AwsAccount, tmp_path: Path,
               activity_executor: ThreadPoolExecutor, receiver: HttpReceiver) -> AsyncIterator[Executions]:
    """A worker whose notify file sends everything to `receiver`."""
    task_queue = f"told-{uuid.uuid4()}"
    notify = NotifyActivities.from_path(catch_all_notify_file(tmp_path, receiver.url, SECRET_ENV))
    worker = build_worker(client, task_queue=task_queue, sessions=sessions, store=store, executor=activity_executor,
                          max_concurrent_activities=16, notify=notify)
    async with worker:
        yield Executions(client, task_queue)


async def _events(receiver: HttpReceiver, want: list[str], timeout: float = 30.0) -> list[dict[str, object]]:
    """The bodies received, once `want`'s events have all arrived (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        bodies = [json.loads(r.body) for r in receiver.requests]
        if set(want) <= {b["event"] for b in bodies}:
            return bodies
        assert time.monotonic() < deadline, f"got {[b['event'] for b in bodies]}, waiting for {want}"
        await asyncio.sleep(0.05)


async def test_people_hear_of_an_approval_request_the_decision_and_the_outcome(
    told: Executions, aws: AwsAccount, receiver: HttpReceiver
) -> None:
    volume = aws.volume(size=30)
    started = await told.start(request(recommendation("ebs.delete", volume, {"expected_size_gib": 30}),
                                       rollback_window=timedelta(0)))
    view = await told.wait(started.execution_id, until=frozenset({S.AWAITING_APPROVAL}), timeout=60)
    asked_at = time.monotonic()
    (body,) = await _events(receiver, ["approval_requested"])
    # Told at once, not at the end: the request reached the receiver while the execution waits.
    assert time.monotonic() - asked_at < 10
    asked = body["notification"]
    assert isinstance(asked, dict) and asked["subject_id"] == started.execution_id and asked["resource_id"] == volume
    assert asked["risk"] == view.risk.value and asked["planned_steps"], asked
    assert body["dedup_key"] == f"{started.execution_id}:approval_requested:0"
    signed = receiver.requests[0]
    assert verify_signature("test-webhook-secret", signed.headers[HEADER], signed.body, time.time())
    assert not verify_signature("test-webhook-secret", signed.headers[HEADER], signed.body + b" ", time.time())

    await told.decide(started.execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
    assert (await told.wait(started.execution_id, timeout=60)).status is S.COMPLETED
    bodies = await _events(receiver, ["approval_requested", "approved", "completed"])
    assert [b["event"] for b in bodies] == ["approval_requested", "approved", "completed"]
    assert all("test-webhook-secret" not in r.body.decode() for r in receiver.requests)


async def test_a_channel_that_refuses_never_holds_up_the_change(
    told: Executions, aws: AwsAccount, receiver: HttpReceiver
) -> None:
    receiver.status = 400  # the channel refuses every message: a permanent failure
    instance = aws.instance()
    started = await told.start(request(recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"}),
                                       auto_approve=True, rollback_window=timedelta(0)))
    # Closed, not only COMPLETED: a run drains its deliveries before it closes, so by then the
    # refused one is in the history and the receiver has had it.
    view = await asyncio.wait_for(told.handle(started.execution_id).result(), 60)
    assert view.status is S.COMPLETED and aws.instance_state(instance)[0] == "stopped"
    history = await told.handle(started.execution_id).fetch_history()
    assert "deliver_notification" in activity_names(history)  # tried, failed, reported in the history
    assert [json.loads(r.body)["event"] for r in receiver.requests] == ["completed"]


# ---- every channel, against the status change ------------------------------------------------

SLACK_PATH, TEAMS_PATH = "/services/T0LIVE/B0LIVE/slack-live-secret-path", "/teams/teams-live-secret-path"
EVENTS = ["approval_requested", "approved", "completed"]
LINKS = LinkBase(public_url="http://127.0.0.1:8000", web_ui_url="http://localhost:8233", namespace="default")


def _status_changes(history: WorkflowHistory) -> list[tuple[str, float]]:
    """(status, when) for each ReclaimStatus the execution published, in order: when the world saw it change."""
    changes = []
    for event in history.events:
        if event.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            if "ReclaimStatus" in fields:
                changes.append((json.loads(fields["ReclaimStatus"].data),
                                event.event_time.ToDatetime(tzinfo=UTC).timestamp()))
    return changes


def _changed_at(changes: list[tuple[str, float]]) -> dict[str, float]:
    """The status change each event tells of: the request when it awaits approval, the approval when it
    moves on from there, the outcome when it completes."""
    statuses = [status for status, _ in changes]
    asked = statuses.index(S.AWAITING_APPROVAL.value)
    return {"approval_requested": changes[asked][1], "approved": changes[asked + 1][1],
            "completed": changes[statuses.index(S.COMPLETED.value)][1]}


def _dedup_key(channel: str, got: Received) -> str:
    """Each channel's own place for the dedup key (module docstrings of activities/notify/)."""
    if channel == "webhook":
        return got.headers["X-Reclaim-Delivery"]
    posted = json.loads(got.body)
    if channel == "slack":
        return str(posted["blocks"][-1]["elements"][0]["text"]).removeprefix("reclaim · ")
    if channel == "teams":
        return str(posted["attachments"][0]["content"]["body"][-1]["text"]).removeprefix("reclaim · ")
    return str(json.loads(posted["Message"])["dedup_key"])  # sns: moto's HTTP subscription envelope


def _arrivals(receiver: HttpReceiver, mailbox: MailBox) -> dict[str, dict[str, float]]:
    """channel -> dedup key -> when it arrived (the first time)."""
    paths = {"/hook": "webhook", SLACK_PATH: "slack", TEAMS_PATH: "teams", "/sns": "sns"}
    got: dict[str, dict[str, float]] = {c: {} for c in [*paths.values(), "email"]}
    for r in list(receiver.requests):
        got[paths[r.path]].setdefault(_dedup_key(paths[r.path], r), r.at)
    for mail in list(mailbox.mails):
        got["email"].setdefault(str(mail.message["X-Reclaim-Delivery"]), mail.at)
    return got


async def _arrived(receiver: HttpReceiver, mailbox: MailBox, keys: list[str],
                   timeout: float = 30.0) -> dict[str, dict[str, float]]:
    deadline = time.monotonic() + timeout
    while True:
        got = _arrivals(receiver, mailbox)
        if all(set(keys) <= set(arrived) for arrived in got.values()):
            return got
        assert time.monotonic() < deadline, f"waiting for {keys}; arrived: {got}"
        await asyncio.sleep(0.02)


async def test_every_channel_hears_an_approval_needing_execution_soon_after_each_status_change(
    client: Client, sessions: SessionFactory, store: Store, aws: AwsAccount, tmp_path: Path,
    activity_executor: ThreadPoolExecutor, receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch,
    record_property: Callable[[str, object], None],
) -> None:
    """Webhook, Slack and Teams (local HTTP receiver), e-mail (aiosmtpd, with auth) and SNS (moto, an HTTP
    subscription to the same receiver) each get the request, the approval and the outcome. The lag from
    the status change (its ReclaimStatus upsert in the history) to the arrival is printed and recorded
    per channel and event; the issue's 2 s is a target read from these numbers, not asserted."""
    sns = boto3.client("sns", region_name=REGION, endpoint_url=aws.endpoint)
    topic = sns.create_topic(Name="reclaim-live")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=f"{receiver.url}/sns")
    monkeypatch.setenv("T_LIVE_HOOK_SECRET", "live-hook-hmac-secret")
    monkeypatch.setenv("T_LIVE_SLACK_URL", receiver.url + SLACK_PATH)
    monkeypatch.setenv("T_LIVE_TEAMS_URL", receiver.url + TEAMS_PATH)
    monkeypatch.setenv("T_LIVE_SMTP_PASSWORD", "live-smtp-password")
    with smtp_receiver({"reclaim": "live-smtp-password"}) as (mailbox, smtp_port):
        notify_file = tmp_path / "notify.yaml"
        notify_file.write_text(f"""
channels:
  webhook: {{type: webhook, url: "{receiver.url}/hook", secret: env:T_LIVE_HOOK_SECRET}}
  slack: {{type: slack, webhook_url: env:T_LIVE_SLACK_URL}}
  teams: {{type: teams, webhook_url: env:T_LIVE_TEAMS_URL}}
  email: {{type: email, host: 127.0.0.1, port: {smtp_port}, starttls: false, username: reclaim,
          password: env:T_LIVE_SMTP_PASSWORD, sender: reclaim@example.com, to: [finops@example.com]}}
  sns: {{type: sns, topic_arn: "{topic}", endpoint_url: "{aws.endpoint}"}}
rules:
  - channels: [webhook, slack, teams, email, sns]
""")
        task_queue = f"told-all-{uuid.uuid4()}"
        worker = build_worker(client, task_queue=task_queue, sessions=sessions, store=store,
                              executor=activity_executor, max_concurrent_activities=16,
                              notify=NotifyActivities.from_path(notify_file, links=LINKS))
        async with worker:
            told = Executions(client, task_queue)
            volume = aws.volume(size=30)
            started = await told.start(request(recommendation("ebs.delete", volume, {"expected_size_gib": 30}),
                                               rollback_window=timedelta(0)))
            execution_id = started.execution_id
            keys = [f"{execution_id}:{event}:0" for event in EVENTS]
            await told.wait(execution_id, until=frozenset({S.AWAITING_APPROVAL}), timeout=60)
            asked = await _arrived(receiver, mailbox, keys[:1])
            # Told while it waits: every channel has the request before anyone decides.
            assert all(keys[1] not in arrived for arrived in asked.values())
            await told.decide(execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
            assert (await asyncio.wait_for(told.handle(execution_id).result(), 60)).status is S.COMPLETED
            arrived = await _arrived(receiver, mailbox, keys)
        history = await told.handle(execution_id).fetch_history()

    assert activity_names(history).count("deliver_notification") == len(EVENTS) * 5
    changed = _changed_at(_status_changes(history))
    lines = []
    for channel, got in arrived.items():
        assert sorted(got, key=got.__getitem__) == keys, (channel, got)  # each once, in order
        for event, key in zip(EVENTS, keys, strict=True):
            lag = got[key] - changed[event]
            assert lag >= 0, f"{channel} had {event} before the status changed ({lag:.3f} s)"
            record_property(f"lag_ms.{channel}.{event}", round(lag * 1000))
            lines.append(f"  {channel:<8} {event:<19} {lag * 1000:7.0f} ms")
    print(f"\nstatus change -> arrival, {execution_id}:", *lines, sep="\n")

    # What each got is that channel's own form of the request.
    bodies = {r.path: r for r in receiver.requests if keys[0] in r.body.decode()}
    assert verify_signature("live-hook-hmac-secret", bodies["/hook"].headers[HEADER], bodies["/hook"].body,
                            time.time())
    slack = json.loads(bodies[SLACK_PATH].body)
    buttons = {e["action_id"]: e.get("value") for b in slack["blocks"] if b["type"] == "actions"
               for e in b["elements"]}
    assert buttons["reclaim_approve"] == buttons["reclaim_reject"] == execution_id
    page = f"{LINKS.public_url}/approvals/{execution_id}"
    teams = json.loads(bodies[TEAMS_PATH].body)["attachments"][0]["content"]
    assert {"type": "Action.OpenUrl", "title": "Approve or reject", "url": page} in teams["actions"]
    published = json.loads(json.loads(bodies["/sns"].body)["Message"])
    assert published["event"] == "approval_requested" and published["notification"]["resource_id"] == volume
    [mail] = [m for m in mailbox.mails if m.message["X-Reclaim-Delivery"] == keys[0]]
    assert mail.recipients == ["finops@example.com"] and volume in str(mail.message["Subject"])
    plain = mail.message.get_body(("plain",))
    assert plain is not None and f"Approve or reject: {page}" in plain.get_content()
