"""Signed decisions (domain/signing.py): what the signature covers, as pure functions.

The workflow tests (tests/test_signed_approvals.py) show the same refusals on the dev server;
here the property: any change to anything signed, the workflow, the decision or any field of
the payload, and the signature no longer verifies.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.execution import ApprovalInput
from domain.manual import ManualDecision
from domain.plan import PlanDecision
from domain.policy import Policy, Role
from domain.signing import (
    CLOCK_SKEW,
    MAX_AGE,
    SignedDecision,
    manual_decision,
    plan_decision,
    public_key_text,
    sign,
    signature_refusal,
)
from runtime import logmask
from runtime.approval_key import ApprovalKeyError, ApprovalSigner, new_key_file, parse_private_key
from runtime.logmask import MASK
from runtime.settings import Settings

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = public_key_text(KEY)
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=20)
comments = st.text(max_size=40).map(str.strip)
roles = st.sampled_from(list(Role))
decisions = st.sampled_from(["approve", "reject"])
workflow_ids = st.from_regex(r"exec-[a-z0-9-]{1,20}", fullmatch=True)


@st.composite
def signed_approvals(draw: st.DrawFn) -> tuple[str, str, ApprovalInput]:
    workflow_id, decision = draw(workflow_ids), draw(decisions)
    attempt = ApprovalInput(actor=draw(names), role=draw(roles), comment=draw(comments))
    issued = NOW - timedelta(seconds=draw(st.integers(0, int(MAX_AGE.total_seconds()))))
    return workflow_id, decision, sign(KEY, workflow_id, decision, attempt, issued)


@st.composite
def one_change(draw: st.DrawFn, signed: tuple[str, str, ApprovalInput]) -> tuple[str, str, ApprovalInput]:
    """The same decision with exactly one signed thing changed (the signature kept)."""
    workflow_id, decision, attempt = signed
    what = draw(st.sampled_from(["workflow_id", "decision", "actor", "role", "comment", "issued_at"]))
    if what == "workflow_id":
        return draw(workflow_ids.filter(lambda w: w != workflow_id)), decision, attempt
    if what == "decision":
        return workflow_id, "reject" if decision == "approve" else "approve", attempt
    field: dict[str, Any] = {
        "actor": lambda: draw(names.filter(lambda a: a.strip() != attempt.actor)),
        "role": lambda: draw(roles.filter(lambda r: r is not attempt.role)),
        "comment": lambda: draw(comments.filter(lambda c: c != attempt.comment)),
        "issued_at": lambda: attempt.issued_at + timedelta(microseconds=draw(st.integers(1, 10**6))),  # type: ignore[operator]
    }
    return workflow_id, decision, attempt.model_copy(update={what: field[what]()})


def refusal(workflow_id: str, decision: str, payload: SignedDecision, now: datetime = NOW,
            keys: list[str] | None = None) -> str | None:
    return signature_refusal([PUBLIC] if keys is None else keys, workflow_id, decision, payload, now)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_change_to_a_signed_field_invalidates_the_signature(data: st.DataObject) -> None:
    signed = data.draw(signed_approvals())
    assert refusal(*signed) is None
    changed = data.draw(one_change(signed))
    assert "does not match" in (refusal(*changed) or "")


@settings(max_examples=100, deadline=None)
@given(signed=signed_approvals())
def test_a_signature_survives_the_trip_through_temporal(signed: tuple[str, str, ApprovalInput]) -> None:
    """What the workflow receives is the JSON the client sent, parsed again."""
    workflow_id, decision, attempt = signed
    again = ApprovalInput.model_validate_json(attempt.model_dump_json())
    assert refusal(workflow_id, decision, again) is None


def test_unsigned_forged_foreign_old_and_future_decisions_are_refused() -> None:
    bob = ApprovalInput(actor="bob", role=Role.APPROVER, comment="ok")
    assert refusal("exec-1", "approve", bob, keys=[]) is None  # no key in the policy: taken at its word
    assert (refusal("exec-1", "approve", bob) or "").startswith("unsigned")
    assert "does not match" in (refusal("exec-1", "approve", sign(OTHER, "exec-1", "approve", bob, NOW)) or "")
    assert "not base64" in (refusal("exec-1", "approve", bob.model_copy(
        update={"issued_at": NOW, "signature": "%%%"})) or "")
    signed = sign(KEY, "exec-1", "approve", bob, NOW)
    assert refusal("exec-1", "approve", signed, keys=[public_key_text(OTHER), PUBLIC]) is None  # rotation
    assert "too old" in (refusal("exec-1", "approve", signed, now=NOW + MAX_AGE + timedelta(seconds=1)) or "")
    assert refusal("exec-1", "approve", signed, now=NOW + MAX_AGE) is None
    assert "future" in (refusal("exec-1", "approve", signed, now=NOW - CLOCK_SKEW - timedelta(seconds=1)) or "")
    naive = sign(KEY, "exec-1", "approve", bob, NOW).model_copy(update={"issued_at": NOW.replace(tzinfo=None)})
    assert refusal("exec-1", "approve", naive) is None  # read as UTC, never a TypeError in the workflow


def test_plan_and_manual_decisions_are_signed_apart_from_an_execution_s() -> None:
    plan = sign(KEY, "plan:p1", plan_decision(True), PlanDecision(actor="bob", role=Role.APPROVER, items=["r1"]), NOW)
    assert refusal("plan:p1", plan_decision(True), plan) is None
    assert "does not match" in (refusal("plan:p1", plan_decision(True),
                                        plan.model_copy(update={"items": ["r1", "r2"]})) or "")
    assert "does not match" in (refusal("plan:p1", "approve", plan) or "")
    manual = sign(KEY, "plan:p1", manual_decision(True),
                  ManualDecision(item="m1", actor="olga", role=Role.OPERATOR, evidence="ticket 12"), NOW)
    assert refusal("plan:p1", manual_decision(True), manual) is None
    for change in ({"item": "m2"}, {"evidence": "ticket 13"}):
        assert "does not match" in (refusal("plan:p1", manual_decision(True), manual.model_copy(update=change)) or "")
    assert "does not match" in (refusal("plan:p1", manual_decision(False), manual) or "")


def test_policy_refuses_a_public_key_that_is_not_one() -> None:
    assert Policy(approval_public_keys=[PUBLIC]).approval_public_keys == [PUBLIC]
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError, match=r"base64|32 bytes"):
            Policy(approval_public_keys=[bad])


def test_settings_carry_the_public_keys_into_the_policy_and_check_the_signing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "approval.pem"
    key = new_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        new_key_file(path)
    public = public_key_text(key)
    settings = Settings(approval_public_key=f" {public} , {PUBLIC}", approval_signing_key=f"file:{path}")
    assert settings.policy().approval_public_keys == [public, PUBLIC]
    signer = settings.approval_signer()
    assert signer is not None and signer.public_key == public and PUBLIC not in repr(signer)
    assert Settings().approval_signer() is None and Settings().policy().approval_public_keys == []
    monkeypatch.setenv("APPROVAL_KEY_TEST", base64.b64encode(bytes(range(32))).decode())
    assert Settings(approval_signing_key="env:APPROVAL_KEY_TEST").approval_signer().public_key == PUBLIC  # type: ignore[union-attr]
    # Once read, the key is masked in this process's log lines, whatever its variable is called.
    body = path.read_text().splitlines()[1]
    assert logmask.mask(f"a {body} b {base64.b64encode(bytes(range(32))).decode()}") == f"a {MASK} b {MASK}"
    with pytest.raises(ApprovalKeyError, match="not among"):
        Settings(approval_public_key=PUBLIC, approval_signing_key=f"file:{path}").approval_signer()
    with pytest.raises(ApprovalKeyError, match="APPROVAL_KEY_MISSING is not set"):
        Settings(approval_signing_key="env:APPROVAL_KEY_MISSING").approval_signer()
    with pytest.raises(ValueError, match="reference"):  # the key itself, inline: refused
        Settings(approval_signing_key=path.read_text())
    (tmp_path / "rsa.txt").write_text("not a key")
    with pytest.raises(ApprovalKeyError, match="neither PEM nor base64") as refused:
        ApprovalSigner.from_reference(f"file:{tmp_path / 'rsa.txt'}")
    assert "not a key" not in str(refused.value)
    assert public_key_text(parse_private_key(path.read_text())) == public
