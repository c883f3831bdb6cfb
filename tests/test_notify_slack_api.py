"""The Slack channel's chat-API way (bot token, `chat.postMessage`) against a local Slack Web API.

The local API (tests/notify_support.py `slack_api`) checks the bearer token and the channel as Slack
does and answers `ok: false` with Slack's codes; rate limits and outages are queued answers.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.notify.config import NotifyFileError, parse_notify_file
from activities.notify.delivery import NotifyActivities
from activities.notify.slack import message
from domain.notifications import DeliveryInput, DeliveryResult, DeliveryStatus, Notification, SlackChannel
from runtime import logmask
from tests.notify_support import SlackApi, approval_request, slack_api
from worker import mask_notify_secrets

# Not xoxb-shaped: masking must come from registering the token, not from the log filter's patterns.
TOKEN = f"slackbot-token-{uuid.uuid4().hex}"
CHANNEL = "C0FINOPS42"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackApi]:
    monkeypatch.setenv("T_SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("T_SLACK_WRONG_TOKEN", f"slackbot-revoked-{uuid.uuid4().hex}")
    with slack_api(TOKEN, {CHANNEL}) as running:
        yield running


def activities(api: SlackApi) -> NotifyActivities:
    return NotifyActivities(parse_notify_file(f"""
channels:
  bot: {{type: slack, bot_token: env:T_SLACK_BOT_TOKEN, channel: {CHANNEL}, api_url: "{api.url}"}}
  wrong-token: {{type: slack, bot_token: env:T_SLACK_WRONG_TOKEN, channel: {CHANNEL}, api_url: "{api.url}"}}
  no-such-channel: {{type: slack, bot_token: env:T_SLACK_BOT_TOKEN, channel: C0GONE0000, api_url: "{api.url}"}}
"""))


async def deliver(acts: NotifyActivities, n: Notification, channel: str) -> Any:
    return await ActivityEnvironment().run(acts.deliver, DeliveryInput(notification=n, channel=channel))


async def failure(acts: NotifyActivities, n: Notification, channel: str = "bot") -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await deliver(acts, n, channel)
    return caught.value


async def test_an_approval_request_is_posted_with_the_bearer_token_and_its_buttons(api: SlackApi) -> None:
    acts = activities(api)
    n = approval_request()
    outcome = await deliver(acts, n, "bot")
    [got] = api.requests
    assert got.path == "/api/chat.postMessage"
    assert got.headers["Authorization"] == f"Bearer {TOKEN}"
    assert got.headers["Content-Type"].startswith("application/json")
    posted = json.loads(got.body)
    assert posted == {"channel": CHANNEL, **message(n)}
    assert posted["text"] == "[reclaim] Approval requested: ebs.delete vol-0abc"
    [actions] = [b for b in posted["blocks"] if b["type"] == "actions"]
    buttons = {e["action_id"]: e for e in actions["elements"]}
    assert buttons["reclaim_approve"]["value"] == buttons["reclaim_reject"]["value"] == "exec-rec-42"
    assert buttons["reclaim_approve"]["text"]["text"] == "Approve"
    assert buttons["reclaim_reject"]["text"]["text"] == "Reject"
    # Where the message is, for a later chat.update: Slack's channel and ts, kept in the result.
    assert outcome.status is DeliveryStatus.SENT and outcome.channel == "bot" and outcome.channel_type == "slack"
    assert outcome.receipt == {"channel": CHANNEL, "ts": "1764927000.000001"}
    assert outcome.detail == f"chat.postMessage to {CHANNEL}, ts 1764927000.000001"
    again = await deliver(acts, n, "bot")  # a retried activity: not posted twice, the receipt kept
    assert again.status is DeliveryStatus.DUPLICATE and again.receipt == outcome.receipt and len(api.requests) == 1
    converter = pydantic_data_converter.payload_converter  # as the history holds it
    assert converter.from_payloads(converter.to_payloads([outcome]), [DeliveryResult]) == [outcome]
    # Without a receipt the result is what earlier workers wrote (and, refusing unknown fields, can read).
    plain = outcome.model_copy(update={"receipt": {}})
    assert "receipt" not in plain.model_dump() and b"receipt" not in converter.to_payloads([plain])[0].data


async def test_slacks_refusals_are_not_retried(api: SlackApi) -> None:
    acts = activities(api)
    n = approval_request()
    bad_token = await failure(acts, n, "wrong-token")  # HTTP 200, {"ok": false, "error": "invalid_auth"}
    assert bad_token.non_retryable and bad_token.type == "ChannelRejected"
    assert bad_token.message == "channel wrong-token: 127.0.0.1: chat.postMessage failed: invalid_auth"
    gone = await failure(acts, n, "no-such-channel")
    assert gone.non_retryable and gone.message.endswith("chat.postMessage failed: channel_not_found")
    for code in ("not_in_channel", "account_inactive", "token_revoked", "msg_too_long"):
        api.replies.append((200, {}, {"ok": False, "error": code}))
        refused = await failure(acts, n)
        assert refused.non_retryable and refused.type == "ChannelRejected" and code in str(refused)
    api.replies.append((200, {"Content-Type": "text/html"}, {"not": "slack"}))  # JSON, but not Slack's answer
    elsewhere = await failure(acts, n)
    assert elsewhere.non_retryable and "is api_url Slack's Web API?" in str(elsewhere)
    assert api.posted == 0


async def test_rate_limits_and_outages_are_retried_after_retry_after(api: SlackApi) -> None:
    acts = activities(api)
    n = approval_request()
    api.replies += [
        (429, {"Retry-After": "7"}, {"ok": False, "error": "ratelimited"}),  # how Slack rate-limits today
        (200, {"Retry-After": "3"}, {"ok": False, "error": "ratelimited"}),  # ok: false ratelimited on a 200
        (200, {}, {"ok": False, "error": "internal_error"}),
        (200, {}, {"ok": False, "error": "fatal_error"}),
        (200, {}, {"ok": False, "error": "service_unavailable"}),
        (503, {}, {"ok": False, "error": "service_unavailable"}),
    ]
    attempts = [await failure(acts, n) for _ in range(6)]
    for attempt in attempts:
        assert not attempt.non_retryable and attempt.type == "ChannelUnavailable"
    assert attempts[0].message == "channel bot: 127.0.0.1 answered HTTP 429 (ratelimited)"
    assert attempts[0].next_retry_delay == timedelta(seconds=7)
    assert attempts[1].message == "channel bot: 127.0.0.1: chat.postMessage failed: ratelimited"
    assert attempts[1].next_retry_delay == timedelta(seconds=3)
    assert [a.next_retry_delay for a in attempts[2:]] == [None] * 4  # Temporal's backoff
    outcome = await deliver(acts, n, "bot")  # failed attempts are not remembered: the retry posts
    assert outcome.status is DeliveryStatus.SENT and api.posted == 1 and len(api.requests) == 7


async def test_the_token_is_in_no_result_error_or_log_line(api: SlackApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    acts = activities(api)
    outcome = await deliver(acts, approval_request(), "bot")
    refused = await failure(acts, approval_request(), "wrong-token")
    api.replies.append((429, {"Retry-After": "1"}, {"ok": False, "error": "ratelimited"}))
    limited = await failure(acts, approval_request(sequence=1))
    assert api.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"  # it was sent, to Slack only
    visible = "\n".join([outcome.model_dump_json(), repr(outcome), str(refused), str(limited), caplog.text,
                         *(r.getMessage() for r in caplog.records), acts.file.model_dump_json(), repr(acts.file)])
    assert "notification exec-rec-42:approval_requested:0 to bot: sent (chat.postMessage" in caplog.text
    assert "invalid_auth" in caplog.text and "ratelimited" in caplog.text
    assert TOKEN not in visible and "slackbot-revoked-" not in visible
    assert "env:T_SLACK_BOT_TOKEN" in acts.file.model_dump_json()
    # The worker registers the notify file's secrets with the log mask at start: the bot token is one.
    mask_notify_secrets(acts)
    assert logmask.mask(f"Authorization: {TOKEN} and {TOKEN[:-1]}") == f"Authorization: *** and {TOKEN[:-1]}"


def problems(channel: str) -> list[str]:
    with pytest.raises(NotifyFileError) as caught:
        parse_notify_file(f"channels:\n  finops:\n    type: slack\n{channel}rules:\n  - channels: [finops]\n",
                          "notify.yaml")
    return caught.value.problems


def test_exactly_one_way_and_the_token_by_reference_only() -> None:
    assert problems("    webhook_url: env:SLACK_URL\n    bot_token: env:SLACK_TOKEN\n    channel: C0123456789\n") == [
        "notify.yaml:5: channels.finops.bot_token: give either webhook_url (an incoming webhook) or bot_token "
        "and channel (the chat API), not both"]
    assert problems("    timeout_seconds: 5\n") == [
        "notify.yaml:2: channels.finops.webhook_url: give webhook_url (an incoming webhook) or bot_token and "
        "channel (the chat API)"]
    assert problems("    bot_token: env:SLACK_TOKEN\n") == [
        "notify.yaml:2: channels.finops.channel: bot_token posts with the chat API, which needs channel "
        "(a Slack channel id, e.g. C0123456789)"]
    assert problems("    webhook_url: env:SLACK_URL\n    channel: C0123456789\n") == [
        "notify.yaml:5: channels.finops.channel: an incoming webhook posts to its own channel: channel goes "
        "with bot_token only"]
    inline = problems("    bot_token: xoxb-1111-2222-inlineSecret\n    channel: C0123456789\n")
    assert inline == ["notify.yaml:4: channels.finops.bot_token: looks like a secret (a webhook URL or a token): "
                      "inline secrets are refused; give a secret field as env:NAME or file:/path"]
    bare = problems("    bot_token: plainInlineSecret\n    channel: C0123456789\n")
    assert bare == ["notify.yaml:4: channels.finops.bot_token: a secret must be a reference, env:NAME or "
                    "file:/absolute/path; inline secrets are refused"]
    assert not any("inlineSecret" in p or "plainInlineSecret" in p for p in inline + bare)
    assert problems("    bot_token: env:SLACK_TOKEN\n    channel: \"#finops\"\n")[0].startswith(
        "notify.yaml:5: channels.finops.channel: String should match pattern")
    parsed = parse_notify_file("channels:\n  finops: {type: slack, bot_token: file:/run/secrets/slack-bot, "
                               "channel: C0123456789}\n")
    bot = parsed.channels["finops"]
    assert isinstance(bot, SlackChannel) and bot.api_url == "https://slack.com/api"
    assert bot.secret_refs() == {"bot_token": "file:/run/secrets/slack-bot"}


def test_notify_check_and_test_from_the_cli(api: SlackApi, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from starter.cli import app

    path = tmp_path / "notify.yaml"
    path.write_text(f'channels:\n  bot: {{type: slack, bot_token: env:T_SLACK_BOT_TOKEN, channel: {CHANNEL}, '
                    f'api_url: "{api.url}"}}\n')
    checked = CliRunner().invoke(app, ["notify", "check", "--file", str(path)])
    assert checked.exit_code == 0, checked.stderr
    flat = " ".join(checked.stdout.split())
    assert CHANNEL in flat and "env:T_SLACK_BOT_TOKEN (resolves)" in flat
    tested = CliRunner().invoke(app, ["notify", "test", "bot", "--file", str(path)])
    assert tested.exit_code == 0, tested.stderr
    assert tested.stdout.startswith(f"sent to bot (slack): chat.postMessage to {CHANNEL}, ts 1764927000.000001")
    assert api.posted == 1 and TOKEN not in checked.stdout + checked.stderr + tested.stdout + tested.stderr
