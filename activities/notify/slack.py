"""Slack: a message in Block Kit, through an incoming webhook (its URL is the secret) or the chat API.

An approval request (and its reminders) carries Approve and Reject buttons: `action_id`
`reclaim_approve` / `reclaim_reject`, `value` the execution id; Slack posts the click to the
app's interactivity URL, `POST /api/v1/integrations/slack/actions` (`starter/api/routes/slack.py`),
which decides and rewrites the message. The message's blocks end with the dedup key in a context line.

    channels:
      finops-slack:
        type: slack
        webhook_url: env:RECLAIM_SLACK_WEBHOOK_URL
      finops-slack-bot:                        # the chat API: chat.postMessage with a bot token
        type: slack
        bot_token: env:RECLAIM_SLACK_BOT_TOKEN
        channel: C0123456789

The chat API answers with the message's channel and `ts`; the delivery result keeps them in its
`receipt` (an incoming webhook answers only "ok", so there is nothing to keep).
"""

from __future__ import annotations

import time
from typing import Any

from activities.notify import render
from activities.notify.base import Secrets, post_json, register, result
from activities.notify.slackapi import post_message
from activities.notify.webhook import encode
from domain.notifications import DeliveryResult, Notification, SlackChannel

APPROVE, REJECT = "reclaim_approve", "reclaim_reject"


def _mrkdwn(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message(n: Notification) -> dict[str, Any]:
    fields = [{"type": "mrkdwn", "text": f"*{label}*\n{_mrkdwn(value)}"} for label, value in render.facts(n)]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": render.title(n)[:150]}},
        *({"type": "section", "fields": fields[i:i + 10]} for i in range(0, len(fields), 10)),
    ]
    if n.planned_steps:
        steps = "\n".join(f"{i}. {_mrkdwn(s)}" for i, s in enumerate(n.planned_steps, 1))
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Planned steps*\n{steps}"}})
    actions: list[dict[str, Any]] = []
    if n.asks_decision:
        actions += [
            {"type": "button", "action_id": APPROVE, "style": "primary", "value": n.subject_id,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": REJECT, "style": "danger", "value": n.subject_id,
             "text": {"type": "plain_text", "text": "Reject"}},
        ]
    for label, url, action_id in (("Approval page", n.links.approval_page, "reclaim_open_page"),
                                  ("Report", n.links.report, "reclaim_open_report"),
                                  ("Web UI", n.links.web_ui, "reclaim_open_web_ui")):
        if url:
            actions.append({"type": "button", "action_id": action_id, "url": url,
                            "text": {"type": "plain_text", "text": label}})
    if actions:
        blocks.append({"type": "actions", "block_id": f"reclaim:{n.subject_id}"[:255], "elements": actions})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"reclaim · {n.dedup_key}"}]})
    return {"text": render.title(n), "blocks": blocks}


@register("slack")
async def send(n: Notification, config: SlackChannel, secrets: Secrets) -> DeliveryResult:
    started = time.monotonic()
    if config.bot_token is not None and config.channel is not None:
        posted = await post_message(config.api_url, secrets.get("bot_token"), config.channel, message(n),
                                    timeout=config.timeout_seconds)
        return result(n, config, started, f"chat.postMessage to {posted.channel}, ts {posted.ts}",
                      receipt={"channel": posted.channel, "ts": posted.ts})
    detail = await post_json(secrets.get("webhook_url"), encode(message(n)), timeout=config.timeout_seconds)
    return result(n, config, started, detail)
