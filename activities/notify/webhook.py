"""Webhook: a POST of one stable JSON body (docs/notification.schema.json), signed.

Headers: `X-Reclaim-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with the channel's
`secret` (verify with `activities.notify.signature.verify_signature`), `X-Reclaim-Delivery` the
dedup key (also in the body: a receiver that saw it before can drop a repeat), `X-Reclaim-Event`.

    channels:
      ops-hook:
        type: webhook
        url: https://hooks.example.com/reclaim
        secret: env:RECLAIM_OPS_HOOK_SECRET
"""

from __future__ import annotations

import json
import time
from typing import Any

from activities.notify import render
from activities.notify.base import Secrets, post_json, register, result
from activities.notify.signature import HEADER, sign
from domain.notifications import DeliveryResult, Notification, WebhookChannel

SCHEMA_ID = "reclaim.notification.v1"


def body(n: Notification) -> dict[str, Any]:
    return {
        "schema": SCHEMA_ID,
        "dedup_key": n.dedup_key,
        "event": n.event.value,
        "severity": n.severity.value,
        "title": render.title(n),
        "text": render.text(n),
        "notification": n.model_dump(mode="json"),
    }


def encode(payload: dict[str, Any]) -> bytes:
    """Compact, key-sorted UTF-8 JSON: the exact bytes that are signed and sent."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def body_schema() -> dict[str, Any]:
    """The JSON Schema of `body` (docs/notification.schema.json is this, checked by a test)."""
    notification = Notification.model_json_schema(mode="serialization")
    defs = notification.pop("$defs", {})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Reclaim notification (webhook body, SNS message)",
        "type": "object",
        "additionalProperties": False,
        "required": ["schema", "dedup_key", "event", "severity", "title", "text", "notification"],
        "properties": {
            "schema": {"const": SCHEMA_ID},
            "dedup_key": {"type": "string", "description": "<subject_id>:<event>:<sequence>; drop repeats"},
            "event": notification["properties"]["event"],
            "severity": notification["properties"]["severity"],
            "title": {"type": "string"},
            "text": {"type": "string", "description": "The plain-text rendering."},
            "notification": notification,
        },
        "$defs": defs,
    }


@register("webhook")
async def send(n: Notification, config: WebhookChannel, secrets: Secrets) -> DeliveryResult:
    started = time.monotonic()
    raw = encode(body(n))
    headers = {
        HEADER: sign(secrets.get("secret"), raw, int(time.time())),
        "X-Reclaim-Delivery": n.dedup_key,
        "X-Reclaim-Event": n.event.value,
    }
    detail = await post_json(config.url, raw, timeout=config.timeout_seconds, headers=headers)
    return result(n, config, started, detail)


if __name__ == "__main__":  # python -m activities.notify.webhook > docs/notification.schema.json
    print(json.dumps(body_schema(), indent=2, sort_keys=True))
