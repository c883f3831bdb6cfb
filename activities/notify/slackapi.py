"""Slack's Web API, `chat.postMessage`: the Slack channel's bot-token way (`slack.py` decides which way).

Slack answers HTTP 200 to most failures, `{"ok": false, "error": "<code>"}`, so the body is what
says whether it posted. A few codes are Slack having a bad moment and worth another attempt
(`RETRYABLE`); every other one (`invalid_auth`, `channel_not_found`, `not_in_channel`,
`token_revoked`, ...) stays wrong until someone fixes the app or the file, so retrying only spams
the log. An HTTP 429 (how Slack rate-limits today) and 5xx are retryable too, a 429 after its
Retry-After. The token travels only in the Authorization header; errors name the host and
Slack's code, never the request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

from activities.notify.base import ChannelError, post, refused, retry_after
from activities.notify.webhook import encode

#: `ok: false` codes worth another attempt (ratelimited: after Retry-After when Slack sends one).
RETRYABLE = frozenset({"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
                       "request_timeout"})
_CODE = re.compile(r"^[a-z0-9_]{1,64}$")


@dataclass(frozen=True)
class Posted:
    """Where the message is: what `chat.update` needs to rewrite it later."""

    channel: str
    ts: str


async def post_message(api_url: str, token: str, channel: str, message: dict[str, Any], *,
                       timeout: float) -> Posted:
    """Post `message` (`text` and `blocks`) to `channel`; raises `ChannelError` unless Slack says ok."""
    url = f"{api_url.rstrip('/')}/chat.postMessage"
    host = httpx.URL(url).host
    response = await post(url, encode({"channel": channel, **message}), timeout=timeout, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json; charset=utf-8"})
    try:
        answer = json.loads(response.content)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or "ok" not in answer:
        answer = None
    code = str(answer.get("error", "")) if answer else ""
    code = code if _CODE.match(code) else "unknown"
    if not response.is_success:  # the HTTP status decides; Slack's code, if any, says why
        error = refused(host, response)
        raise ChannelError(f"{error} ({code})" if answer else str(error), retryable=error.retryable,
                           retry_after=error.retry_after)
    if answer is None:
        raise ChannelError(f"{host}: chat.postMessage answered HTTP {response.status_code} without Slack's "
                           "JSON (is api_url Slack's Web API?)", retryable=False)
    if answer["ok"] is not True:
        raise ChannelError(f"{host}: chat.postMessage failed: {code}", retryable=code in RETRYABLE,
                           retry_after=retry_after(response) if code in RETRYABLE else None)
    return Posted(channel=str(answer.get("channel") or channel), ts=str(answer.get("ts") or ""))
