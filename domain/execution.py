"""Inputs, outputs and messages of one execution (workflow, activities, signals, updates, query)."""

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator

from domain.base import StrictModel
from domain.policy import ActionTraits, Policy, RiskLevel, Role
from domain.recommendation import Recommendation
from domain.signing import SignedDecision
from domain.status import ExecutionStatus

TASK_QUEUE = "reclaim"
#: At most this many resources an execution's validation reads ahead for the plan's next items.
READ_AHEAD_MAX = 25


def execution_id_for(recommendation_id: str, dry_run: bool = False) -> str:
    """One recommendation, one execution: a duplicate submission finds the same workflow.

    A dry run is a plan, not the execution: it has its own id, so planning first
    never uses up the recommendation's one real execution. `dry_run=True` gives the id
    dry runs had before `dry_run_id_for` (`plan-`, easily read as a PlanWorkflow's `plan:`):
    existing ones keep it, and so do the items of plans that started before
    `workflows.versions.PLAN_DRY_RUN_IDS`.
    """
    return f"{'plan' if dry_run else 'exec'}-{recommendation_id}"


def dry_run_id_for(recommendation_id: str) -> str:
    """The id of a new dry run, started on its own (`reclaim execute --dry-run`, the API) or by a plan."""
    return f"dryrun-{recommendation_id}"


def lease_id_for(account_id: str, region: str, resource_id: str) -> str:
    """The per-resource mutex: at most one running lease workflow with this id."""
    return f"lease-{account_id}-{region}-{resource_id}"


class ExecutionOptions(StrictModel):
    dry_run: bool = False
    auto_approve: bool = Field(
        default=True, description="Allow the policy to auto-approve; False always asks a human."
    )
    # Upper bounds keep durations within what Temporal timers and datetime arithmetic hold
    # (P999999999D overflowed after the change was applied) and within any sane policy.
    approval_timeout: timedelta = Field(default=timedelta(hours=24), gt=timedelta(0), le=timedelta(days=30))
    rollback_window: timedelta = Field(default=timedelta(days=7), ge=timedelta(0), le=timedelta(days=90))
    verify_timeout: timedelta = Field(default=timedelta(minutes=10), gt=timedelta(0), le=timedelta(days=1))
    step_timeout: timedelta = Field(
        default=timedelta(minutes=2), gt=timedelta(0), le=timedelta(hours=6),
        description="Longest one attempt of a mutating step may take before it is retried elsewhere.",
    )
    not_before: datetime | None = Field(
        default=None, description="Start of the maintenance window; the change waits for it."
    )
    retain_backups: bool = Field(
        default=False, description="Keep backups after the rollback window instead of cleaning them up."
    )
    approval_reminders: list[float] = Field(
        default_factory=lambda: [0.5, 0.9], max_length=10,
        description="When approvers are reminded, as fractions of the approval timeout (0.5: half way).",
    )
    owner_warning_lead: timedelta = Field(
        default=timedelta(hours=24), ge=timedelta(0), le=timedelta(days=30),
        description="How long before a destructive change waiting for its window its owners are told "
                    "(0: not told).",
    )
    watch_period: timedelta | None = Field(
        default=None, ge=timedelta(0), le=timedelta(days=7),
        description="How long the resource's metrics are watched after the change (None: the kind's own, "
                    "1 h for rightsizes; 0: not watched).",
    )
    watch_ratio: float | None = Field(
        default=None, gt=1, le=100,
        description="How far past its baseline a watched metric must go to undo the change (None: each "
                    "metric's own, 1.5 for CPU).",
    )
    measure_savings_after: timedelta = Field(
        default=timedelta(days=30), ge=timedelta(0), le=timedelta(days=366),
        description="How long after the change its savings are measured (Cost Explorer, else the price "
                    "table; `reclaim savings`); 0: not measured.",
    )
    alarm_repeat: timedelta = Field(
        default=timedelta(hours=4), ge=timedelta(minutes=1), le=timedelta(days=7),
        description="How often a failed undo's alarm is repeated until someone acknowledges it.",
    )

    @field_validator("approval_reminders")
    @classmethod
    def _reminders_within_the_wait(cls, value: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in value):
            raise ValueError("each reminder is a fraction of the approval timeout, strictly between 0 and 1")
        return sorted(set(value))


class ExecutionRequest(StrictModel):
    """The single input of ExecutionWorkflow. Carries no credentials, ever."""

    recommendation: Recommendation
    options: ExecutionOptions = Field(default_factory=ExecutionOptions)
    requested_by: str = Field(min_length=1, max_length=128)
    policy: Policy = Field(default_factory=Policy)
    plan_id: str | None = Field(default=None, description="Set when a plan runs this execution as its item.")
    plan_approval: "PlanApproval | None" = Field(
        default=None, description="The approval of the plan's dry run that covers this item."
    )
    expected: "Observation | None" = Field(
        default=None, description="The resource as the approved dry run saw it; any drift is refused."
    )
    read_ahead: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=READ_AHEAD_MAX,
        description="Resources the plan's next items of the same kind, account and region will validate: "
                    "this execution's validation reads them too, in the same AWS call (the plan sets it).")


class Refusal(StrEnum):
    """Why policy refused a change: an answer, not a failure (plans count these apart)."""

    PROTECTED = "protected"
    PRODUCTION = "production"
    COOLDOWN = "cooldown"
    BUSY = "busy"
    CHANGED = "changed"
    """The resource no longer is what the recommendation (or the approved dry run) saw: drift, or gone."""
    NOT_COVERED = "not_covered"
    """The plan's approval does not cover this item (the approver may not approve it)."""
    NO_WINDOW = "no_window"
    """No opening of its change windows fits it outside the freezes within the horizon."""


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class ApprovalInput(SignedDecision):
    """Payload of the `approve` / `reject` signal and update.

    Example for the stock CLI:
    `temporal workflow signal --workflow-id exec-rec-1 --name approve
     --input '{"actor": "bob", "role": "approver", "comment": "ok"}'`
    (refused when the execution's policy carries approval public keys: then only a decision
    Reclaim signed, `issued_at` and `signature`, is taken; domain/signing.py).
    """

    actor: str = Field(min_length=1, max_length=128)
    role: Role = Field(description="The decider's role; the workflow requires approver or admin.")
    comment: str = Field(default="", max_length=2000)


class ApprovalRecord(StrictModel):
    """One decision attempt, accepted or refused: the approvals audit trail."""

    id: str
    execution_id: str
    actor: str
    role: Role
    decision: Decision
    comment: str
    at: datetime
    accepted: bool
    refusal: str | None = None
    via: str = "signal"


class PlanApproval(StrictModel):
    """A person's approval of a whole dry-run report, handed to each item it covers."""

    plan_id: str
    actor: str
    role: Role
    comment: str = ""
    at: datetime


class RollbackInput(StrictModel):
    actor: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="", max_length=2000)


class StepLogEntry(StrictModel):
    at: datetime
    status: ExecutionStatus
    message: str


class BackupRecord(StrictModel):
    """What a kind saved before mutating, enough to revert and to clean up."""

    kind: str
    resource_id: str
    backup_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class Observation(StrictModel):
    """What a kind's `inspect` saw of the live resource."""

    state: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)


def drift(expected: Observation, seen: Observation, volatile: frozenset[str] = frozenset()) -> list[str]:
    """What changed since `expected` was observed, one phrase per field.

    Compared as JSON, the way both observations travel; `volatile` keys (sizes,
    counters) change on their own and are not drift.
    """
    before, now = expected.model_dump(mode="json"), seen.model_dump(mode="json")
    changes: list[str] = []
    for section, label in (("state", ""), ("tags", "tag ")):
        old, new = before[section], now[section]
        for key in sorted(set(old) | set(new)):
            if section == "state" and key in volatile:
                continue
            if old.get(key) != new.get(key):
                changes.append(f"{label}{key} was {_shown(old, key)}, now {_shown(new, key)}")
    return changes


def _shown(values: dict[str, Any], key: str) -> str:
    return repr(values[key]) if key in values else "absent"


class ValidateInput(StrictModel):
    execution_id: str
    recommendation: Recommendation
    expected: Observation | None = Field(default=None, description="Refuse any drift from this observation.")
    read_ahead: list[str] = Field(default_factory=list, description="ExecutionRequest.read_ahead.")
    fresh_since: datetime | None = Field(
        default=None, description="No answer from an AWS call sent before this (the execution's start, or the "
                                  "end of its wait when validating again) is taken; None: every read asks AWS.")


class ActionStepInput(StrictModel):
    """Input of every per-kind step activity (permissions, backup, apply, verify, revert, cleanup)."""

    execution_id: str
    recommendation: Recommendation
    observed: Observation
    backup: BackupRecord | None = None
    hand_back: bool = Field(
        default=False, description="Apply only: a change still under way (InProgress) is answered as a result "
                                   "with data.in_progress, so the workflow waits on a durable timer and asks again.")


class Assessment(StrictModel):
    """Result of validation: the live facts and, when invalid, why."""

    valid: bool
    reason: str | None = None
    traits: ActionTraits | None = None
    observed: Observation = Field(default_factory=Observation)
    estimated_monthly_savings: float = 0.0
    plan: list[str] = Field(default_factory=list)


class PermissionReport(StrictModel):
    allowed: bool
    checked: list[str]
    denied: list[str] = Field(default_factory=list)
    unverified: list[str] = Field(
        default_factory=list, description="Calls whose service has no DryRun: allowed is not proven for them."
    )
    plan: list[str] = Field(default_factory=list, description="What the execution would do, step by step.")


class ResourceRef(StrictModel):
    """Which resource, for questions about its past (the cooldown)."""

    account_id: str
    region: str
    resource_id: str
    exclude_execution_id: str | None = None


class LastChange(StrictModel):
    execution_id: str
    status: ExecutionStatus
    at: datetime


class StepResult(StrictModel):
    changed: bool
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class ExecutionView(StrictModel):
    """What the `status` query returns, and what the read model stores."""

    execution_id: str
    recommendation_id: str
    customer_id: str
    account_id: str
    region: str
    kind: str
    resource_id: str
    requested_by: str
    status: ExecutionStatus
    step: str
    progress_percent: int
    reason: str | None = None
    refusal: Refusal | None = Field(default=None, description="Set when policy refused the change (not a failure).")
    risk: RiskLevel | None = None
    risk_reasons: list[str] = Field(default_factory=list)
    approval_reasons: list[str] = Field(default_factory=list)
    dry_run: bool = False
    estimated_monthly_savings: float = 0.0
    actual_monthly_savings: float | None = Field(
        default=None, description="Savings of the change as verified, from the price table (the ledger's figure)."
    )
    approvals: list[ApprovalRecord] = Field(default_factory=list)
    backups: list[BackupRecord] = Field(default_factory=list)
    permission_report: PermissionReport | None = None
    observed: Observation | None = Field(
        default=None, description="A dry run's look at the live resource: what an approved run must still find.")
    rollback_available_until: datetime | None = None
    launches: dict[str, datetime] = Field(
        default_factory=dict, description="What the apply launched and when (a drill: source server id -> "
                                          "its recovery instance seen launched, on the server's clock).")
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    log: list[StepLogEntry] = Field(default_factory=list)
    sequence: int = Field(default=0, description="Grows with every change; the read model keeps the newest.")


ExecutionRequest.model_rebuild()
