"""Microsoft Teams: an Adaptive Card through an incoming webhook (its URL is the secret).

Teams cards do not call back here: an approval request links to the approval page.

    channels:
      finops-teams:
        type: teams
        webhook_url: file:/run/secrets/teams-webhook-url
"""

from __future__ import annotations

import time
from typing import Any

from activities.notify import render
from activities.notify.base import Secrets, post_json, register, result
from activities.notify.webhook import encode
from domain.notifications import DeliveryResult, Notification, Severity, TeamsChannel

_COLOUR = {Severity.INFO: "default", Severity.WARNING: "warning", Severity.ERROR: "attention",
           Severity.CRITICAL: "attention"}


def card(n: Notification) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "size": "Large", "weight": "Bolder", "wrap": True, "text": render.title(n),
         "color": _COLOUR[n.severity]},
        {"type": "FactSet", "facts": [{"title": label, "value": value} for label, value in render.facts(n)]},
    ]
    if n.planned_steps:
        body.append({"type": "TextBlock", "wrap": True,
                     "text": "\n".join(f"{i}. {s}" for i, s in enumerate(n.planned_steps, 1))})
    body.append({"type": "TextBlock", "isSubtle": True, "size": "Small", "text": f"reclaim · {n.dedup_key}"})
    actions = []
    if n.links.approval_page:
        label = "Approve or reject" if n.asks_decision else "Open in Reclaim"
        actions.append({"type": "Action.OpenUrl", "title": label, "url": n.links.approval_page})
    if n.links.report:
        actions.append({"type": "Action.OpenUrl", "title": "Report", "url": n.links.report})
    if n.links.web_ui:
        actions.append({"type": "Action.OpenUrl", "title": "Web UI", "url": n.links.web_ui})
    content = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
               "version": "1.4", "body": body, "actions": actions}
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": content}]}


@register("teams")
async def send(n: Notification, config: TeamsChannel, secrets: Secrets) -> DeliveryResult:
    started = time.monotonic()
    detail = await post_json(secrets.get("webhook_url"), encode(card(n)), timeout=config.timeout_seconds)
    return result(n, config, started, detail)
