"""Signed decisions: who approved is what Reclaim vouches for, not what a caller claims.

Anyone who can reach Temporal can send an `approve` update with any actor and role in
it (the stock `temporal` CLI takes `{"actor": "bob", "role": "admin"}` at its word).
Where that matters, the steering side (the API, the approval page, the Slack callback,
the CLI on the embedded stack) signs each decision with an Ed25519 private key the
workers never hold, and the policy the run started with carries the public keys: the
workflow's validator then refuses a decision whose signature does not cover exactly
this workflow, this decision, this person, role and comment, or is older than
`MAX_AGE` by the workflow's clock.

Pure: verification runs inside the workflow (validators and signal handlers), so it
reads no clock but the `now` it is given and does no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field

from domain.base import StrictModel

#: A signature older than this (by the workflow's clock) is refused: a captured one cannot be kept for later.
MAX_AGE = timedelta(minutes=15)
#: How far ahead of the workflow's clock an `issued_at` may be (the signer's and the server's clocks differ).
CLOCK_SKEW = timedelta(minutes=2)

_DOMAIN = b"reclaim-signed-decision-v1\n"


class SignedDecision(StrictModel):
    """The two fields every person's decision may carry; unset on the stock-CLI path."""

    issued_at: datetime | None = Field(default=None, description="When Reclaim signed it (UTC).")
    signature: str | None = Field(
        default=None, max_length=200,
        description="base64 Ed25519 signature by Reclaim's approval key of this decision (see domain/signing.py).",
    )


_T = TypeVar("_T", bound=SignedDecision)


def _instant(at: datetime) -> datetime:
    """Naive times are read as UTC: the refusal is then about the signature, never a TypeError."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def plan_decision(approve: bool) -> str:
    """What a plan's approve / reject is signed as (never the same bytes as an execution's)."""
    return "plan.approve" if approve else "plan.reject"


def manual_decision(confirm: bool) -> str:
    """What a manual item's confirm / fail is signed as."""
    return "manual.confirm" if confirm else "manual.fail"


def signed_message(workflow_id: str, decision: str, payload: SignedDecision) -> bytes:
    """The canonical bytes signed: the workflow, the decision and every field of the payload but
    the signature (sorted JSON, so the same decision always gives the same bytes)."""
    if payload.issued_at is None:
        raise ValueError("a signed decision needs issued_at")
    body = {
        "workflow_id": workflow_id,
        "decision": decision,
        "issued_at": _instant(payload.issued_at).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "fields": payload.model_dump(mode="json", exclude={"signature", "issued_at"}),
    }
    return _DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(key: Ed25519PrivateKey, workflow_id: str, decision: str, payload: _T, issued_at: datetime) -> _T:
    """`payload` with `issued_at` and the signature over it set (a copy; the original is untouched)."""
    dated = payload.model_copy(update={"issued_at": _instant(issued_at), "signature": None})
    signature = key.sign(signed_message(workflow_id, decision, dated))
    return dated.model_copy(update={"signature": base64.b64encode(signature).decode()})


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The form `Policy.approval_public_keys` and RECLAIM_APPROVAL_PUBLIC_KEY take: base64 of the 32 raw bytes."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A public key as `public_key_text` writes it; ValueError with a plain reason otherwise."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("an approval public key is base64 (reclaim approval-key prints it)") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes; this one is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def signature_refusal(public_keys: Sequence[str], workflow_id: str, decision: str, payload: SignedDecision,
                      now: datetime) -> str | None:
    """Why this decision is not one Reclaim signed for this workflow, now; None when it is (or when
    the policy carries no key: then decisions are taken at their word, as before)."""
    if not public_keys:
        return None
    if payload.signature is None or payload.issued_at is None:
        return ("unsigned: this execution accepts only decisions signed by Reclaim (through the API, "
                "the approval page or Slack), not ones sent straight to Temporal")
    try:
        signature = base64.b64decode(payload.signature, validate=True)
    except (binascii.Error, ValueError):
        return "the signature is not base64"
    message = signed_message(workflow_id, decision, payload)
    if not any(_verifies(key, signature, message) for key in public_keys):
        return (f"the signature does not match this {decision}: forged, or signed for another execution, "
                "decision, person, role or comment")
    issued = _instant(payload.issued_at)
    if now - issued > MAX_AGE:
        return (f"the signature is too old: issued {issued:%Y-%m-%d %H:%M:%S} UTC, more than "
                f"{MAX_AGE.total_seconds() / 60:g} minutes before now; decide again")
    if issued - now > CLOCK_SKEW:
        return f"the signature is issued in the future ({issued:%Y-%m-%d %H:%M:%S} UTC): the signer's clock is wrong"
    return None


def _verifies(public_key: str, signature: bytes, message: bytes) -> bool:
    try:
        parse_public_key(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
