"""Slack's side of an approval: is this callback really Slack's, and what the message says afterwards.

`SlackVerifier.refusal(timestamp, signature, body, now)` checks Slack's request signature: the
`X-Slack-Signature` header is `v0=` + hex HMAC-SHA256, keyed with the app's signing secret, of
`v0:{X-Slack-Request-Timestamp}:{raw body}`. A timestamp more than 5 minutes from our clock is
refused, the comparison is constant-time, and a signature seen within those 5 minutes is refused
as a replay (the seen ones are kept, in this process, for as long as their timestamp is accepted).

`decided_message(original, text)` / `refused_message(original, text)` rewrite the approval
request's blocks for `response_url`: a decision takes the Approve/Reject buttons away and says
who decided; a refusal keeps them (someone else may still decide) and says why, in one line.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from typing import Any

from activities.notify.slack import APPROVE, REJECT

TOLERANCE_SECONDS = 300
#: The block this module adds to a message: replaced, never stacked, by the next outcome.
OUTCOME_BLOCK = "reclaim:outcome"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Slack-Signature` Slack sends for this body at this time."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class SlackVerifier:
    def __init__(self, secret: str | None, tolerance: float = TOLERANCE_SECONDS) -> None:
        self._secret = secret
        self.tolerance = tolerance
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature -> until when it is remembered

    def refusal(self, timestamp: str | None, given: str | None, body: bytes, now: float) -> str | None:
        """Why this request is not an authentic, fresh Slack callback; None when it is (and it is remembered)."""
        if not self._secret:
            return "Slack callbacks are not configured here (RECLAIM_SLACK_SIGNING_SECRET is unset)"
        if not timestamp or not given:
            return "X-Slack-Request-Timestamp and X-Slack-Signature are required"
        if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
            return "X-Slack-Request-Timestamp is not a Unix time"
        if abs(now - int(timestamp)) > self.tolerance:
            return "the request timestamp is more than 5 minutes from this server's clock"
        expected = signature(self._secret, timestamp, body)
        if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
            return "the signature does not match the body"
        self._forget(now)
        if expected in self._seen:
            return "this callback was already received (a replay)"
        self._seen[expected] = int(timestamp) + self.tolerance
        return None

    def _forget(self, now: float) -> None:
        # Kept in arrival order; timestamps within the window may arrive out of order, so sweep them all
        # once the oldest has expired (cheap: only authentic callbacks of the last 5 minutes are here).
        if self._seen and next(iter(self._seen.values())) < now:
            for key in [k for k, until in self._seen.items() if until < now]:
                del self._seen[key]


def decision_of(payload: dict[str, Any]) -> tuple[bool, str] | None:
    """(approve?, execution id) of the first Approve/Reject click in a `block_actions` payload; None for
    any other click (the Web UI and approval-page buttons are links: Slack tells us, nothing to do)."""
    actions = payload.get("actions")
    if payload.get("type") != "block_actions" or not isinstance(actions, list):
        return None
    for action in actions:
        if not isinstance(action, dict):
            continue
        value = action.get("value")
        if action.get("action_id") in (APPROVE, REJECT) and isinstance(value, str) and 0 < len(value) <= 256:
            return action["action_id"] == APPROVE, value
    return None


def _blocks(original: dict[str, Any] | None) -> list[dict[str, Any]]:
    blocks = (original or {}).get("blocks")
    if not isinstance(blocks, list):
        return []
    return [b for b in blocks if isinstance(b, dict) and b.get("block_id") != OUTCOME_BLOCK]


def _without_decision_buttons(block: dict[str, Any]) -> dict[str, Any] | None:
    if block.get("type") != "actions":
        return block
    kept = [e for e in block.get("elements") or [] if isinstance(e, dict) and e.get("action_id") not in (APPROVE, REJECT)]
    return {**block, "elements": kept} if kept else None


def _outcome(text: str) -> dict[str, Any]:
    return {"type": "section", "block_id": OUTCOME_BLOCK, "text": {"type": "mrkdwn", "text": text[:3000]}}


def decided_message(original: dict[str, Any] | None, text: str) -> dict[str, Any]:
    """The approval request as it reads once decided: no Approve/Reject buttons, who decided."""
    blocks = [kept for b in _blocks(original) if (kept := _without_decision_buttons(b)) is not None]
    return {"replace_original": True, "text": text, "blocks": [*blocks, _outcome(text)]}


def refused_message(original: dict[str, Any] | None, text: str) -> dict[str, Any]:
    """The approval request with the refusal said under it; the buttons stay for someone who may decide."""
    blocks = _blocks(original)
    if not blocks:  # nothing to keep: say it to the person who clicked only
        return {"replace_original": False, "response_type": "ephemeral", "text": text}
    return {"replace_original": True, "text": (original or {}).get("text") or text, "blocks": [*blocks, _outcome(text)]}
