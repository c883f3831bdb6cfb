"""Risk scoring and the approval policy: pure functions, run inside the workflow.

The policy travels in the workflow input as a snapshot taken at submission, so
the decision is deterministic on replay and the history shows the rules that
were applied.
"""

from datetime import datetime, timedelta
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Literal

from pydantic import Field, field_validator

from domain.base import StrictModel
from domain.signing import parse_public_key


class RiskLevel(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


_ORDER = [RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH, RiskLevel.CRITICAL]


def _raise(level: RiskLevel, steps: int = 1) -> RiskLevel:
    return _ORDER[min(_ORDER.index(level) + steps, len(_ORDER) - 1)]


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


class ActionTraits(StrictModel):
    """What the workflow needs to know about an action kind to score it (declared by the kind)."""

    kind: str
    resource_type: str
    reversible: bool
    base_risk: RiskLevel
    destroys_data: bool = Field(description="The apply deletes something; a backup must exist first.")
    expected_duration: timedelta = Field(
        default=timedelta(minutes=15), description="Backup to verified, as a change window must fit it.")
    watch_period: timedelta = Field(
        default=timedelta(0), description="How long its metrics are watched after it is verified (0: not).")
    apply_deadline: timedelta | None = Field(
        default=None, description="How long its apply may take in all, retries included, when that is longer "
                                  "than the workflow's mutation deadline (a launch DRS may take hours over).")


class Policy(StrictModel):
    """Configurable rules of one deployment (or one customer)."""

    auto_approve_max_monthly_savings: float = Field(default=500.0, ge=0)
    auto_approve_kinds: list[str] | None = Field(
        default=None, description="Kinds that may auto-approve; None means every reversible kind."
    )
    production_tags: list[str] = Field(
        default_factory=lambda: ["env=prod*", "environment=prod*", "stage=prod*"],
        description="`key=value-glob` patterns, case-insensitive, that mark a production resource.",
    )
    protect_tag: str = "reclaim:protect"
    refuse_production: bool = Field(
        default=True, description="Refuse production resources outright (else: always ask a human)."
    )
    approver_roles: list[Role] = Field(default_factory=lambda: [Role.APPROVER, Role.ADMIN])
    cooldown_days: float = Field(
        default=7, ge=0, description="Refuse a resource Reclaim changed within this many days (0: off)."
    )
    approval_public_keys: list[str] = Field(
        default_factory=list, max_length=8,
        description="Ed25519 public keys (base64): when set, a person's decision counts only when Reclaim "
                    "signed it with one of their private keys (domain/signing.py); empty: taken at its word.",
    )

    @field_validator("approval_public_keys")
    @classmethod
    def _keys_parse(cls, value: list[str]) -> list[str]:
        for key in value:
            parse_public_key(key)
        return value


class RiskAssessment(StrictModel):
    level: RiskLevel
    reasons: list[str]


class ApprovalRequirement(StrictModel):
    auto_approved: bool
    reasons: list[str]


def is_production(policy: Policy, tags: dict[str, str]) -> bool:
    """Keys and values compare case-insensitively; every tag is checked (AWS keys are
    case-sensitive, so `Env` and `env` can both exist and either may say production)."""
    for pattern in policy.production_tags:
        key, _, value_glob = pattern.partition("=")
        key, glob = key.strip().lower(), (value_glob.strip() or "*").lower()
        if any(k.lower() == key and fnmatchcase(v.lower(), glob) for k, v in tags.items()):
            return True
    return False


def protection_reason(policy: Policy, tags: dict[str, str]) -> str | None:
    """Why the resource must not be touched at all, or None."""
    found = protection(policy, tags)
    return found[1] if found else None


def protection(policy: Policy, tags: dict[str, str]) -> tuple[Literal["protected", "production"], str] | None:
    """Which protection keeps the resource untouched, and why in words; None when none does."""
    protect = policy.protect_tag.lower()
    for key, value in tags.items():
        if key.lower() == protect and value.strip().lower() not in ("false", "0", "no", "off"):
            return "protected", f"resource is protected by the tag {key}={value}"
    if policy.refuse_production and is_production(policy, tags):
        return "production", "resource is tagged as production and the policy refuses production resources"
    return None


def cooldown_refusal(policy: Policy, last_change_at: datetime | None, now: datetime) -> str | None:
    """Why a recently changed resource must settle first (a change needs time to show its effect)."""
    if last_change_at is None or policy.cooldown_days <= 0:
        return None
    until = last_change_at + timedelta(days=policy.cooldown_days)
    if now < until:
        return (f"Reclaim changed this resource on {last_change_at:%Y-%m-%d %H:%M} UTC; "
                f"cooldown of {policy.cooldown_days:g} days until {until:%Y-%m-%d %H:%M} UTC")
    return None


def assess_risk(
    policy: Policy, traits: ActionTraits, monthly_savings: float, tags: dict[str, str]
) -> RiskAssessment:
    level = traits.base_risk
    reasons = [f"{traits.kind} has base risk {traits.base_risk.value}"]
    if not traits.reversible:
        level = max(level, RiskLevel.HIGH, key=_ORDER.index)
        reasons.append("the change is not reversible")
    if traits.destroys_data:
        level = max(level, RiskLevel.MEDIUM, key=_ORDER.index)
        reasons.append("the change deletes data (a backup is taken first)")
    if is_production(policy, tags):
        level = _raise(level)
        reasons.append("the resource is tagged as production")
    if monthly_savings > policy.auto_approve_max_monthly_savings:
        level = _raise(level)
        reasons.append(
            f"savings ${monthly_savings:,.2f}/month exceed the ${policy.auto_approve_max_monthly_savings:,.2f} threshold"
        )
    return RiskAssessment(level=level, reasons=reasons)


def warns_owners(traits: ActionTraits | None) -> bool:
    """A change its resource's owners hear of before its window: one that deletes data or
    cannot be undone (a stop or a resize they can live with; a deleted volume they cannot)."""
    return traits is not None and (traits.destroys_data or not traits.reversible)


def with_floors(risk: RiskAssessment, floors: list[tuple[RiskLevel, str]]) -> RiskAssessment:
    """`risk` raised to each (floor, reason) it is below, every reason kept: never lowered."""
    level, reasons = risk.level, list(risk.reasons)
    for floor, reason in floors:
        level = max(level, floor, key=_ORDER.index)
        reasons.append(reason)
    return RiskAssessment(level=level, reasons=reasons)


def approval_requirement(
    policy: Policy,
    traits: ActionTraits,
    risk: RiskAssessment,
    monthly_savings: float,
    tags: dict[str, str],
    auto_approve_requested: bool = True,
) -> ApprovalRequirement:
    """Auto-approve only low risk, small savings, reversible, non-production, allowed kinds."""
    reasons: list[str] = []
    if not auto_approve_requested:
        reasons.append("the requester asked for a human approval")
    if risk.level is not RiskLevel.LOW:
        reasons.append(f"risk is {risk.level.value}")
    if monthly_savings > policy.auto_approve_max_monthly_savings:
        reasons.append("savings exceed the auto-approval threshold")
    if not traits.reversible:
        reasons.append("irreversible changes always need a human")
    if is_production(policy, tags):
        reasons.append("production resources always need a human")
    allowed = policy.auto_approve_kinds
    if allowed is not None and traits.kind not in allowed:
        reasons.append(f"{traits.kind} is not in the policy's auto-approvable kinds")
    if reasons:
        return ApprovalRequirement(auto_approved=False, reasons=reasons)
    return ApprovalRequirement(auto_approved=True, reasons=["low risk within the auto-approval policy"])


def approval_refusal(
    policy: Policy, actor: str, role: Role, requested_by: str, approve: bool = True
) -> str | None:
    """Why `actor` may not approve (or reject) this execution, or None when they may.

    Withdrawing one's own request by rejecting it is allowed; approving it is not.
    """
    if not actor.strip():
        return "an approver identity is required"
    if role not in policy.approver_roles:
        allowed = ", ".join(r.value for r in policy.approver_roles)
        return f"{actor} has role {role.value}; deciding needs one of: {allowed}"
    if approve and actor.strip().lower() == requested_by.strip().lower():
        return f"{actor} requested this execution and cannot approve it"
    return None
