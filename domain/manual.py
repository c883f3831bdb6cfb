"""Manual steps of a plan: something a person does that Reclaim cannot (tell a team, check a
dashboard, run a migration), confirmed or failed by someone of the step's role.

A manual item is not an AWS execution: the plan waits for `confirm` or `fail` on it, or for its
timeout. A failed or timed-out step is a failed item like any other (error threshold, the waves
behind it SKIPPED). Pure: the plan workflow, the CLI and the API share these rules.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator

from domain.base import StrictModel
from domain.policy import Role
from domain.recommendation import ID_PATTERN
from domain.signing import SignedDecision

MANUAL_KIND: Literal["manual"] = "manual"
#: A plan holds at most this many manual items (each is shown, instructions and all, in its progress).
MAX_MANUAL_ITEMS = 50
#: Who may be named to confirm a manual item: a viewer cannot steer a plan.
MANUAL_ROLES = (Role.OPERATOR, Role.APPROVER, Role.ADMIN)
_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.APPROVER: 2, Role.ADMIN: 3}

#: Where a manual item stands (an item's status in the plan's counts and report).
AWAITING_CONFIRMATION = "AWAITING_CONFIRMATION"
CONFIRMED = "CONFIRMED"
MANUAL_FAILED = "FAILED"
TIMED_OUT = "TIMED_OUT"


class ManualStep(StrictModel):
    """A plan item of kind `manual`, as written in a plan file (under `manual:`, or among the
    recommendations with `kind: manual`):

        - kind: manual
          id: tell-batch-team
          instructions: |
            Tell **#batch-team** the batch hosts stop at 18:00; paste the message's link as evidence.
          role: operator          # operator, approver or admin (or anyone above it) confirms
          timeout: PT2H           # ISO 8601 or seconds; no answer by then: the item fails
    """

    kind: Literal["manual"] = MANUAL_KIND
    id: str = Field(pattern=ID_PATTERN, description="The item's id in the plan (waves name it).")
    instructions: str = Field(max_length=10_000, description="What the person is to do (Markdown).")
    role: Role = Field(description="The role that may confirm or fail it (operator, approver or admin; "
                                   "a higher role may too).")
    timeout: timedelta = Field(description="How long the plan waits for an answer; then the item fails.")

    @field_validator("instructions")
    @classmethod
    def _has_instructions(cls, value: str) -> str:
        if not value:
            raise ValueError("a manual item needs instructions (Markdown): what the person is to do")
        return value

    @field_validator("role", mode="before")
    @classmethod
    def _known_role(cls, value: Any) -> Any:
        allowed = ", ".join(r.value for r in MANUAL_ROLES)
        if value not in [r.value for r in MANUAL_ROLES] + list(MANUAL_ROLES):
            raise ValueError(f"unknown role {value!r} for a manual item: one of {allowed}")
        return value

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"a manual item's timeout must be positive, got {value}")
        if value > timedelta(days=30):
            raise ValueError(f"a manual item's timeout is at most 30 days, got {value}")
        return value


class ManualDecision(SignedDecision):
    """`confirm` or `fail` of a waiting manual item (signal or update on the plan): who, why, and
    the evidence (a link or text) the report keeps."""

    item: str = Field(pattern=ID_PATTERN, description="The manual item's id.")
    actor: str = Field(min_length=1, max_length=128)
    role: Role
    comment: str = Field(default="", max_length=2000)
    evidence: str = Field(default="", max_length=4000, description="A link or text that shows it was done.")


class ManualProgress(StrictModel):
    """A manual item as the plan's progress shows it (its instructions while it waits, too)."""

    id: str
    wave: int
    role: Role
    instructions: str
    timeout: timedelta
    status: str = "PENDING"
    waiting_since: datetime | None = None
    deadline: datetime | None = None
    decided_by: str | None = None
    decided_via: str | None = None
    comment: str = ""
    evidence: str = ""
    finished_at: datetime | None = None


def may_decide(role: Role, required: Role) -> bool:
    """The item's role, or one above it."""
    return _RANK[role] >= _RANK[required]


def manual_refusal(plan_id: str, step: ManualProgress | None, decision: ManualDecision, confirm: bool) -> str | None:
    """Why this person may not confirm (or fail) this item now; None when they may."""
    verb = "confirm" if confirm else "fail"
    if step is None:
        return f"plan {plan_id} has no manual item {decision.item}"
    if not may_decide(decision.role, step.role):
        return (f"{decision.actor} has role {decision.role.value}; manual item {step.id} is confirmed or "
                f"failed by {step.role.value} (or above)")
    if step.status != AWAITING_CONFIRMATION:
        by = f" by {step.decided_by}" if step.decided_by else ""
        return f"manual item {step.id} is {step.status}{by}, not waiting: only a waiting item can be {verb}ed"
    return None
