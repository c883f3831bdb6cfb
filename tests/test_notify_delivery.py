"""Channels against real local receivers: webhook, Slack, Teams (HTTP), e-mail (aiosmtpd), SNS (moto).

And the delivery activity: dedup by key, retryable or not, rate limit, metrics, no secret anywhere.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.notify import metrics
from activities.notify.base import Secrets, registry
from activities.notify.config import parse_notify_file
from activities.notify.delivery import NotifyActivities
from activities.notify.ratelimit import TokenBucket
from activities.notify.signature import HEADER, sign, verify_signature
from activities.notify.slack import message
from activities.notify.teams import card
from activities.notify.webhook import body, body_schema, encode
from domain.notifications import (
    CHANNEL_TYPES,
    ChannelSpec,
    DeliveryInput,
    DeliveryResult,
    DeliveryStatus,
    Notification,
)
from starter.devserver import free_port
from tests.conftest import AwsAccount
from tests.notify_support import HttpReceiver, MailBox, approval_request, self_signed, smtp_receiver

ROOT = Path(__file__).resolve().parent.parent
HOOK_SECRET = "whsec-test-5f2c9a"
SLACK_URL_PATH = "/services/T000/B000/SLACKSECRETPATH"



@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch, receiver: HttpReceiver) -> None:
    monkeypatch.setenv("T_HOOK_SECRET", HOOK_SECRET)
    monkeypatch.setenv("T_SLACK_URL", receiver.url + SLACK_URL_PATH)
    monkeypatch.setenv("T_TEAMS_URL", receiver.url + "/teams/TEAMSSECRETPATH")


def activities(receiver: HttpReceiver, extra: str = "") -> NotifyActivities:
    return NotifyActivities(parse_notify_file(f"""
channels:
  hook: {{type: webhook, url: "{receiver.url}/hook", secret: env:T_HOOK_SECRET}}
  slack: {{type: slack, webhook_url: env:T_SLACK_URL}}
  teams: {{type: teams, webhook_url: env:T_TEAMS_URL}}
{extra}
"""))


async def deliver(acts: NotifyActivities, n: Notification, channel: str) -> Any:
    return await ActivityEnvironment().run(acts.deliver, DeliveryInput(notification=n, channel=channel))


def test_every_channel_type_has_one_module() -> None:
    assert sorted(registry()) == sorted(CHANNEL_TYPES)
    union = ChannelSpec.__origin__.__args__  # type: ignore[attr-defined]
    assert sorted(t.model_fields["type"].annotation.__args__[0] for t in union) == sorted(CHANNEL_TYPES)


async def test_webhook_posts_the_schema_body_signed(receiver: HttpReceiver, secrets_env: None) -> None:
    n = approval_request()
    before = int(time.time())
    outcome = await deliver(activities(receiver), n, "hook")
    assert outcome.status is DeliveryStatus.SENT and outcome.channel == "hook" and outcome.detail == "HTTP 200"
    [got] = receiver.requests
    assert got.path == "/hook"
    assert got.body == encode(body(n))
    assert got.headers["X-Reclaim-Delivery"] == "exec-rec-42:approval_requested:0"
    sent = json.loads(got.body)
    assert sent["notification"] == json.loads(n.model_dump_json())
    assert Notification.model_validate(sent["notification"]) == n
    jsonschema.validate(sent, json.loads((ROOT / "docs/notification.schema.json").read_text()))
    header = got.headers[HEADER]
    assert verify_signature(HOOK_SECRET, header, got.body, now=time.time())
    assert int(header.split(",")[0].removeprefix("t=")) >= before
    tampered = got.body.replace(b"812.5", b"1812.5")
    assert not verify_signature(HOOK_SECRET, header, tampered, now=time.time())
    assert not verify_signature("another-secret", header, got.body, now=time.time())
    assert not verify_signature(HOOK_SECRET, header, got.body, now=time.time() + 301)  # replayed later
    assert not verify_signature(HOOK_SECRET, "v1=deadbeef", got.body, now=time.time())


def test_the_schema_file_is_the_models_schema_and_refuses_drift() -> None:
    assert json.loads((ROOT / "docs/notification.schema.json").read_text()) == body_schema()
    wrong = body(approval_request())
    wrong["notification"]["event"] = "exploded"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, body_schema())


def test_signature_scheme_by_hand() -> None:
    import hashlib
    import hmac

    header = sign("s3cret", b'{"a":1}', 1700000000)
    expected = hmac.new(b"s3cret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify_signature("s3cret", header, b'{"a":1}', now=1700000299)
    assert not verify_signature("s3cret", header, b'{"a":1}', now=1700000301)


async def test_slack_approval_request_has_approve_and_reject_buttons(
    receiver: HttpReceiver, secrets_env: None,
) -> None:
    n = approval_request()
    await deliver(activities(receiver), n, "slack")
    [got] = receiver.requests
    assert got.path == SLACK_URL_PATH
    assert got.body == encode(message(n))
    posted = json.loads(got.body)
    assert posted["text"] == "[reclaim] Approval requested: ebs.delete vol-0abc"
    [actions] = [b for b in posted["blocks"] if b["type"] == "actions"]
    buttons = {e["action_id"]: e for e in actions["elements"]}
    assert buttons["reclaim_approve"]["value"] == "exec-rec-42"
    assert buttons["reclaim_reject"]["value"] == "exec-rec-42"
    assert buttons["reclaim_approve"]["style"] == "primary" and buttons["reclaim_reject"]["style"] == "danger"
    assert buttons["reclaim_open_page"]["url"] == "http://localhost:8000/approvals/exec-rec-42"
    assert posted["blocks"][-1]["elements"][0]["text"] == "reclaim · exec-rec-42:approval_requested:0"
    done = message(approval_request(event="completed", verified_monthly_savings=800.0))
    assert all(e["action_id"] not in ("reclaim_approve", "reclaim_reject")
               for b in done["blocks"] if b["type"] == "actions" for e in b["elements"])


async def test_teams_gets_an_adaptive_card_linking_the_approval_page(
    receiver: HttpReceiver, secrets_env: None,
) -> None:
    n = approval_request()
    await deliver(activities(receiver), n, "teams")
    [got] = receiver.requests
    assert got.path == "/teams/TEAMSSECRETPATH" and got.body == encode(card(n))
    [attachment] = json.loads(got.body)["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    content = attachment["content"]
    assert content["type"] == "AdaptiveCard"
    assert {"type": "Action.OpenUrl", "title": "Approve or reject",
            "url": "http://localhost:8000/approvals/exec-rec-42"} in content["actions"]
    facts = {f["title"]: f["value"] for f in content["body"][1]["facts"]}
    assert facts["Risk"] == "HIGH (deletes data; savings above the auto-approval limit)"
    assert facts["Estimated savings"] == "$812.50/month"


async def test_a_retried_delivery_never_posts_twice(receiver: HttpReceiver, secrets_env: None) -> None:
    acts = activities(receiver)
    n = approval_request()
    first = await deliver(acts, n, "hook")
    again = await deliver(acts, n, "hook")
    assert first.status is DeliveryStatus.SENT and again.status is DeliveryStatus.DUPLICATE
    assert again.dedup_key == first.dedup_key
    assert len(receiver.requests) == 1
    await deliver(acts, n, "slack")  # the same key to another channel is another delivery
    await deliver(acts, n.model_copy(update={"sequence": 1}), "hook")  # the next reminder too
    assert len(receiver.requests) == 3


async def test_5xx_and_unreachable_retry_4xx_does_not(receiver: HttpReceiver, secrets_env: None) -> None:
    acts = activities(receiver, f"""  gone: {{type: webhook, url: "http://127.0.0.1:{free_port()}/", secret: env:T_HOOK_SECRET}}
  nosecret: {{type: webhook, url: "{receiver.url}/", secret: env:T_NOT_SET}}""")
    n = approval_request()
    failed_before = metrics.REGISTRY.get_sample_value(
        "reclaim_notifications_failed_total", {"channel": "hook", "type": "webhook", "retryable": "true"}) or 0
    receiver.status = 503
    with pytest.raises(ApplicationError) as busy:
        await deliver(acts, n, "hook")
    assert not busy.value.non_retryable and busy.value.type == "ChannelUnavailable"
    assert metrics.REGISTRY.get_sample_value(
        "reclaim_notifications_failed_total",
        {"channel": "hook", "type": "webhook", "retryable": "true"}) == failed_before + 1
    receiver.status = 429
    with pytest.raises(ApplicationError) as slow:
        await deliver(acts, n, "slack")
    assert not slow.value.non_retryable
    receiver.status = 404
    with pytest.raises(ApplicationError) as refused:
        await deliver(acts, n, "slack")
    assert refused.value.non_retryable and refused.value.type == "ChannelRejected"
    assert "SLACKSECRETPATH" not in str(refused.value)
    with pytest.raises(ApplicationError) as down:
        await deliver(acts, n, "gone")
    assert not down.value.non_retryable and "ConnectError" in str(down.value)
    with pytest.raises(ApplicationError) as unset:
        await deliver(acts, n, "nosecret")
    assert unset.value.non_retryable and "T_NOT_SET is not set" in str(unset.value)
    with pytest.raises(ApplicationError) as unknown:
        await deliver(acts, n, "nope")
    assert unknown.value.non_retryable and unknown.value.type == "ChannelMisconfigured"
    receiver.status = 200  # the failed attempts were not remembered: the retry sends
    assert (await deliver(acts, n, "hook")).status is DeliveryStatus.SENT


async def test_no_secret_in_any_dump_repr_or_log_line(
    receiver: HttpReceiver, secrets_env: None, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    acts = activities(receiver)
    n = approval_request()
    for channel in ("hook", "slack", "teams"):
        await deliver(acts, n, channel)
    receiver.status = 500
    with pytest.raises(ApplicationError) as failed:
        await deliver(acts, n.model_copy(update={"sequence": 7}), "slack")
    secrets = [HOOK_SECRET, "SLACKSECRETPATH", "TEAMSSECRETPATH"]
    visible = "\n".join([
        caplog.text, *(r.getMessage() for r in caplog.records), str(failed.value),
        acts.file.model_dump_json(), repr(acts.file), str(acts.file.channels),
        repr(Secrets({"secret": HOOK_SECRET})), str(Secrets({"webhook_url": "x" + SLACK_URL_PATH})),
    ])
    assert "notification exec-rec-42:approval_requested:0 to hook: sent" in caplog.text
    for secret in secrets:
        assert secret not in visible
    assert "env:T_SLACK_URL" in acts.file.model_dump_json()


async def test_rate_limit_per_channel(receiver: HttpReceiver, secrets_env: None) -> None:
    clock = [0.0]
    bucket = TokenBucket(per_minute=60, burst=2, clock=lambda: clock[0])
    assert [bucket.reserve(), bucket.reserve(), bucket.reserve()] == [0.0, 0.0, 1.0]
    clock[0] = 3.0
    assert bucket.reserve() == 0.0  # refilled (capped at the burst)
    acts = activities(receiver, f"""  tight: {{type: webhook, url: "{receiver.url}/t", secret: env:T_HOOK_SECRET,
           rate_limit: {{per_minute: 2, burst: 1}}}}""")
    await deliver(acts, approval_request(), "tight")
    with pytest.raises(ApplicationError) as limited:  # the next token is 30 s away: Temporal retries later
        await deliver(acts, approval_request(sequence=1), "tight")
    assert not limited.value.non_retryable and "rate limit" in str(limited.value)
    assert limited.value.next_retry_delay is not None
    await deliver(acts, approval_request(sequence=1), "hook")  # another channel has its own bucket
    assert [r.path for r in receiver.requests] == ["/t", "/hook"]


# ---- e-mail -----------------------------------------------------------------------------------


@pytest.fixture
def smtp() -> Iterator[tuple[MailBox, int]]:
    with smtp_receiver({"reclaim": "smtp-pass-77"}) as got:
        yield got


def email_acts(port: int, extra: str = "") -> NotifyActivities:
    return NotifyActivities(parse_notify_file(f"""
channels:
  owners:
    type: email
    host: 127.0.0.1
    port: {port}
    starttls: false
    username: reclaim
    password: env:T_SMTP_PASSWORD
    sender: reclaim@example.com
    to: [finops@example.com]
    to_tag: Owner
{extra}"""))


async def test_email_to_the_owner_tag_and_a_fixed_list(
    smtp: tuple[MailBox, int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    box, port = smtp
    monkeypatch.setenv("T_SMTP_PASSWORD", "smtp-pass-77")
    acts = email_acts(port)
    n = approval_request()
    outcome = await deliver(acts, n, "owners")
    assert outcome.status is DeliveryStatus.SENT and "3 recipient(s)" in outcome.detail
    [mail] = box.mails
    assert mail.sender == "reclaim@example.com"
    assert mail.recipients == ["finops@example.com", "olive@example.com", "oscar@example.com"]
    msg = mail.message
    assert msg["Subject"] == "[reclaim] Approval requested: ebs.delete vol-0abc"
    assert msg["X-Reclaim-Delivery"] == "exec-rec-42:approval_requested:0"
    plain, rich = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and rich is not None
    text, html = plain.get_content(), rich.get_content()
    assert "Risk: HIGH (deletes data; savings above the auto-approval limit)" in text
    assert "  2. delete vol-0abc" in text
    assert "Approve or reject: http://localhost:8000/approvals/exec-rec-42" in text
    assert "<li>delete vol-0abc</li>" in html and "href='http://localhost:8000/approvals/exec-rec-42'" in html
    assert (await deliver(acts, n, "owners")).status is DeliveryStatus.DUPLICATE and len(box.mails) == 1
    assert "smtp-pass-77" not in caplog.text
    monkeypatch.setenv("T_SMTP_PASSWORD", "wrong")
    with pytest.raises(ApplicationError) as refused:  # 535: permanent
        await deliver(email_acts(port), approval_request(sequence=1), "owners")
    assert refused.value.non_retryable and "535" in str(refused.value)


async def test_email_without_any_recipient_is_skipped(smtp: tuple[MailBox, int]) -> None:
    box, port = smtp
    acts = NotifyActivities(parse_notify_file(f"""
channels:
  owners: {{type: email, host: 127.0.0.1, port: {port}, starttls: false, sender: r@example.com, to_tag: Owner}}
"""))
    outcome = await deliver(acts, approval_request(resource_tags={}), "owners")
    assert outcome.status is DeliveryStatus.SKIPPED and box.mails == []


async def test_email_over_starttls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    box, port = MailBox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                            authenticator=lambda *a: AuthResult(success=True), auth_require_tls=True)
    controller.start()
    try:
        monkeypatch.setenv("T_SMTP_PASSWORD", "p")
        acts = NotifyActivities(parse_notify_file(f"""
channels:
  tls: {{type: email, host: 127.0.0.1, port: {port}, ca_file: {cert}, username: u, password: env:T_SMTP_PASSWORD,
        sender: r@example.com, to: [a@example.com]}}
  plain: {{type: email, host: 127.0.0.1, port: {port}, starttls: false, sender: r@example.com, to: [a@example.com]}}
"""))
        await deliver(acts, approval_request(), "tls")
        assert [m.recipients for m in box.mails] == [["a@example.com"]]
        with pytest.raises(ApplicationError) as refused:  # the server insists on STARTTLS: 530, permanent
            await deliver(acts, approval_request(), "plain")
        assert refused.value.non_retryable
    finally:
        controller.stop()


# ---- SNS ----------------------------------------------------------------------------------------


async def test_sns_publishes_the_schema_body(aws: AwsAccount) -> None:
    sns = boto3.client("sns", region_name="eu-west-1", endpoint_url=aws.endpoint)
    sqs = boto3.client("sqs", region_name="eu-west-1", endpoint_url=aws.endpoint)
    topic = sns.create_topic(Name="reclaim-alarms")["TopicArn"]
    queue = sqs.create_queue(QueueName="alarms")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    acts = NotifyActivities(parse_notify_file(f"""
channels:
  alarms: {{type: sns, topic_arn: "{topic}", endpoint_url: "{aws.endpoint}"}}
  missing: {{type: sns, topic_arn: "{topic}-gone", endpoint_url: "{aws.endpoint}"}}
"""))
    n = approval_request(event="rollback_failed", reason="restore of vol-0abc failed: snapshot missing")
    outcome = await deliver(acts, n, "alarms")
    assert outcome.status is DeliveryStatus.SENT and outcome.detail.startswith("SNS message ")
    [got] = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    envelope = json.loads(got["Body"])
    assert envelope["Subject"] == "[reclaim] ALARM: rollback failed: ebs.delete vol-0abc"
    assert envelope["MessageAttributes"]["severity"]["Value"] == "critical"
    assert envelope["MessageAttributes"]["dedup_key"]["Value"] == "exec-rec-42:rollback_failed:0"
    published = json.loads(envelope["Message"])
    jsonschema.validate(published, body_schema())
    assert published == body(n)
    with pytest.raises(ApplicationError) as gone:
        await deliver(acts, n, "missing")
    assert gone.value.non_retryable and "NotFound" in str(gone.value)


async def test_route_activity_uses_the_files_rules(receiver: HttpReceiver, secrets_env: None) -> None:
    acts = NotifyActivities(parse_notify_file(f"""
channels:
  hook: {{type: webhook, url: "{receiver.url}/hook", secret: env:T_HOOK_SECRET}}
  slack: {{type: slack, webhook_url: env:T_SLACK_URL}}
rules:
  - {{events: [approval_requested], channels: [slack]}}
  - {{min_severity: error, channels: [hook, slack]}}
"""))
    env = ActivityEnvironment()
    assert (await env.run(acts.route, approval_request())).channels == ["slack"]
    assert (await env.run(acts.route, approval_request(event="rollback_failed"))).channels == ["hook", "slack"]
    assert (await env.run(acts.route, approval_request(event="completed"))).channels == []


async def test_the_activity_input_and_output_cross_temporals_converter() -> None:
    from temporalio.contrib.pydantic import pydantic_data_converter

    converter = pydantic_data_converter.payload_converter
    request = DeliveryInput(notification=approval_request(), channel="hook")
    [payload] = converter.to_payloads([request])
    assert converter.from_payloads([payload], [DeliveryInput]) == [request]
    outcome = DeliveryResult(channel="hook", channel_type="webhook", dedup_key="k", status="sent")
    assert converter.from_payloads(converter.to_payloads([outcome]), [DeliveryResult]) == [outcome]
