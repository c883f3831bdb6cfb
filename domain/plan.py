"""Plans: many recommendations run as one durable unit, in waves, under rate control.

Everything here is pure (no I/O, no clock): the plan workflow calls these
functions to decide, and the property tests check them directly.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import Field, model_validator

from domain.base import StrictModel
from domain.execution import READ_AHEAD_MAX, ExecutionOptions, Observation, PlanApproval, Refusal
from domain.manual import (
    AWAITING_CONFIRMATION,
    CONFIRMED,
    MANUAL_KIND,
    MAX_MANUAL_ITEMS,
    TIMED_OUT,
    ManualProgress,
    ManualStep,
)
from domain.policy import Policy, Role
from domain.recommendation import ID_PATTERN, Recommendation
from domain.signing import SignedDecision
from domain.status import ExecutionStatus

S = ExecutionStatus

MAX_ITEMS = 10_000
_QUOTA = re.compile(r"^\s*([0-9]{1,6})\s*(%?)\s*$")


def plan_workflow_id(plan_id: str) -> str:
    """`plan:` cannot clash with an execution id (`exec-`/`plan-` + a recommendation id)."""
    return f"plan:{plan_id}"


class Strategy(StrEnum):
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"
    BY_REGION = "by_region"
    BY_RESOURCE_TYPE = "by_resource_type"
    WAVES = "waves"


class WaveMode(StrEnum):
    PARALLEL = "parallel"
    """Items start together, up to the concurrency limit."""
    ORDERED = "ordered"
    """One item at a time, in the order given."""


class Quota(StrictModel):
    """A count or a percentage of a whole, as SSM Automation's MaxConcurrency/MaxErrors."""

    value: int = Field(ge=0, le=1_000_000)
    percent: bool = False

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, raw: Any) -> Any:
        if isinstance(raw, bool):
            raise ValueError("expected a number or a percentage such as 10 or 25%")
        if isinstance(raw, int):
            return {"value": raw}
        if isinstance(raw, str):
            match = _QUOTA.match(raw)
            if match is None:
                raise ValueError(f"expected a number or a percentage such as 10 or 25%, got {raw!r}")
            return {"value": int(match.group(1)), "percent": bool(match.group(2))}
        return raw

    @model_validator(mode="after")
    def _bounded(self) -> Quota:
        if self.percent and not 0 <= self.value <= 100:
            raise ValueError("a percentage is between 0% and 100%")
        return self

    def of(self, whole: int) -> int:
        """The count this quota allows out of `whole` (a percentage rounds up: 10% of 5 is 1)."""
        if not self.percent:
            return self.value
        return math.ceil(self.value * whole / 100)

    def __str__(self) -> str:
        return f"{self.value}{'%' if self.percent else ''}"


class RateControl(StrictModel):
    max_concurrency: Quota = Field(default_factory=lambda: Quota(value=10),
                                   description="Items of a wave running at once: a number or a % of the wave.")
    error_threshold: Quota | None = Field(
        default=None,
        description="Failed items (a number or a % of the plan) at which the plan pauses: no new item "
                    "starts until it is resumed or aborted. None: never pause.",
    )
    ramp_up: bool = Field(default=False, description="Start each wave 1, 2, 4, ... at a time up to the limit.")
    pause_timeout: timedelta = Field(default=timedelta(hours=24), gt=timedelta(0),
                                     description="A paused plan nobody resumes is aborted after this.")
    approval_timeout: timedelta = Field(default=timedelta(hours=24), gt=timedelta(0),
                                        description="How long an approved-dry-run plan waits for its approval.")
    hold_recheck: timedelta = Field(
        default=timedelta(seconds=60), gt=timedelta(0),
        description="How often items held for their account (disabled in the accounts file) are checked "
                    "again; an account held for pause_timeout has its held items SKIPPED.")

    def concurrency(self, wave_size: int) -> int:
        return max(1, self.max_concurrency.of(wave_size))

    def threshold(self, plan_size: int) -> int | None:
        if self.error_threshold is None:
            return None
        return max(1, self.error_threshold.of(plan_size))


def hold_expired(since: datetime, now: datetime, bound: timedelta) -> bool:
    """An account held this long has its held items SKIPPED: a hold is bounded like a pause."""
    return now - since >= bound


def ramp_limit(limit: int, ramp_up: bool, succeeded_in_wave: int) -> int:
    """1, 2, 4, ...: the next step opens once as many items succeeded as the ramp allowed so far."""
    if not ramp_up:
        return limit
    step = 1
    while step < limit and succeeded_in_wave >= 2 * step - 1:
        step *= 2
    return min(step, limit)


class WaveSpec(StrictModel):
    """An explicit wave as an operator writes it in a plan file."""

    name: str = Field(pattern=ID_PATTERN)
    items: list[str] = Field(min_length=1, description="Recommendation ids.")
    depends_on: list[str] = Field(default_factory=list)
    wait_seconds: float = Field(default=0, ge=0, le=7 * 24 * 3600)
    mode: WaveMode = WaveMode.PARALLEL


class PlanSpec(StrictModel):
    """A plan file (JSON or YAML): what to run and how."""

    id: str | None = Field(default=None, pattern=ID_PATTERN, description="Default: a new id.")
    name: str = Field(default="", max_length=200)
    recommendations: list[Recommendation] = Field(default_factory=list)
    recommendation_ids: list[str] = Field(default_factory=list, description="Recommendations already imported.")
    manual: list[ManualStep] = Field(
        default_factory=list, max_length=MAX_MANUAL_ITEMS,
        description="Manual items (a person confirms each); also accepted among `recommendations` with "
                    "`kind: manual`. Placed by `waves`.")
    strategy: Strategy = Strategy.PARALLEL
    waves: list[WaveSpec] = Field(default_factory=list, description="Only with strategy `waves`.")
    rate: RateControl = Field(default_factory=RateControl)
    dry_run: bool = Field(default=False, description="Dry-run every item, then wait for the report's approval.")
    options: ExecutionOptions = Field(default_factory=ExecutionOptions,
                                      description="Options of every item's execution (dry_run is the plan's).")

    @model_validator(mode="before")
    @classmethod
    def _manual_among_recommendations(cls, raw: Any) -> Any:
        """An entry of `recommendations` with `kind: manual` is a manual item."""
        if not isinstance(raw, dict) or not isinstance(raw.get("recommendations"), list):
            return raw
        entries = raw["recommendations"]
        manual = [e for e in entries if isinstance(e, dict) and e.get("kind") == MANUAL_KIND]
        if not manual:
            return raw
        rest = [e for e in entries if not (isinstance(e, dict) and e.get("kind") == MANUAL_KIND)]
        return {**raw, "recommendations": rest, "manual": [*(raw.get("manual") or []), *manual]}

    @model_validator(mode="after")
    def _coherent(self) -> PlanSpec:
        if self.manual and self.strategy is not Strategy.WAVES:
            raise ValueError("manual items are placed by waves: use strategy `waves` and name them in a wave")
        if self.strategy is Strategy.WAVES and not self.waves:
            raise ValueError("strategy `waves` needs `waves`")
        if self.strategy is not Strategy.WAVES and self.waves:
            raise ValueError(f"`waves` are only used with strategy `waves`, not `{self.strategy.value}`")
        return self


class WavePlan(StrictModel):
    """A wave as the workflow runs it: items are stored, the workflow knows how many."""

    index: int
    name: str
    size: int
    depends_on: list[int] = Field(default_factory=list)
    wait_seconds: float = 0
    mode: WaveMode = WaveMode.PARALLEL


class PlanError(ValueError):
    """A plan that cannot run as written; the message says why."""


#: One item of a plan: a recommendation (an execution) or a manual item (a person confirms it).
PlanEntry = Recommendation | ManualStep


def build_waves(spec: PlanSpec, recs: list[Recommendation]) -> tuple[list[WavePlan], list[list[PlanEntry]]]:
    """Waves in run order, each with its items (in order); refuses what cannot run."""
    if not recs:
        raise PlanError("a plan needs at least one recommendation")
    if len(recs) + len(spec.manual) > MAX_ITEMS:
        raise PlanError(f"a plan holds at most {MAX_ITEMS} recommendations, got {len(recs) + len(spec.manual)}")
    by_id: dict[str, PlanEntry] = {}
    entries: list[PlanEntry] = [*recs, *spec.manual]
    for entry in entries:
        if entry.id in by_id:
            what = "manual item" if isinstance(entry, ManualStep) else "recommendation"
            raise PlanError(f"{what} {entry.id} appears twice")
        by_id[entry.id] = entry
    resources: dict[tuple[str, str, str], str] = {}
    for rec in recs:
        key = (rec.account_id, rec.region, rec.resource_id)
        if key in resources:
            raise PlanError(f"recommendations {resources[key]} and {rec.id} change the same resource {rec.resource_id}")
        resources[key] = rec.id

    if spec.strategy is Strategy.WAVES:
        return _explicit_waves(spec.waves, by_id)
    if spec.strategy in (Strategy.SEQUENTIAL, Strategy.PARALLEL):
        mode = WaveMode.ORDERED if spec.strategy is Strategy.SEQUENTIAL else WaveMode.PARALLEL
        return [WavePlan(index=0, name=spec.strategy.value, size=len(recs), mode=mode)], [list[PlanEntry](recs)]
    groups: dict[str, list[Recommendation]] = {}
    for rec in recs:
        group = rec.region if spec.strategy is Strategy.BY_REGION else resource_type(rec.kind)
        groups.setdefault(group, []).append(rec)
    names = sorted(groups)
    return ([WavePlan(index=i, name=name, size=len(groups[name])) for i, name in enumerate(names)],
            [list(groups[name]) for name in names])


def resource_type(kind: str) -> str:
    """`ec2.stop` and `ec2.rightsize` change the same type of resource: `ec2`."""
    return kind.split(".", 1)[0]


def _explicit_waves(
    waves: list[WaveSpec], by_id: dict[str, PlanEntry]
) -> tuple[list[WavePlan], list[list[PlanEntry]]]:
    names = [w.name for w in waves]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise PlanError(f"wave {duplicate} is defined twice")
    placed: dict[str, str] = {}
    for wave in waves:
        for item in wave.items:
            if item not in by_id:
                raise PlanError(f"wave {wave.name} names recommendation {item}, which is not in the plan")
            if item in placed:
                raise PlanError(f"recommendation {item} is in waves {placed[item]} and {wave.name}")
            placed[item] = wave.name
        for dep in wave.depends_on:
            if dep not in names:
                raise PlanError(f"wave {wave.name} depends on {dep}, which is not a wave of the plan")
            if dep == wave.name:
                raise PlanError(f"wave {wave.name} depends on itself")
    missing = [rec_id for rec_id in by_id if rec_id not in placed]
    if missing:
        raise PlanError(f"recommendations in no wave: {', '.join(missing[:5])}")
    ordered = _topological(waves)
    index = {w.name: i for i, w in enumerate(ordered)}
    plans = [
        WavePlan(index=i, name=w.name, size=len(w.items), depends_on=sorted(index[d] for d in w.depends_on),
                 wait_seconds=w.wait_seconds, mode=w.mode)
        for i, w in enumerate(ordered)
    ]
    return plans, [[by_id[item] for item in w.items] for w in ordered]


def _topological(waves: list[WaveSpec]) -> list[WaveSpec]:
    """Dependencies first; otherwise the order the operator wrote (stable Kahn)."""
    done: set[str] = set()
    ordered: list[WaveSpec] = []
    remaining = list(waves)
    while remaining:
        ready = next((w for w in remaining if all(d in done for d in w.depends_on)), None)
        if ready is None:
            raise PlanError("waves depend on each other in a cycle: " + ", ".join(w.name for w in remaining))
        ordered.append(ready)
        done.add(ready.name)
        remaining.remove(ready)
    return ordered


def transitive_dependents(waves: list[WavePlan], failed: set[int]) -> set[int]:
    """Every wave that depends, directly or through others, on a failed wave."""
    hit: set[int] = set()
    changed = True
    while changed:
        changed = False
        for wave in waves:
            if wave.index not in hit and any(d in failed or d in hit for d in wave.depends_on):
                hit.add(wave.index)
                changed = True
    return hit


# ---- items and outcomes -------------------------------------------------------------------


class ItemState(StrEnum):
    """Where an item stands in its plan; once it ran, its execution's own status is used."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SKIPPED = "SKIPPED"
    """A wave it depends on failed."""
    NOT_STARTED = "NOT_STARTED"
    """The plan was aborted before the item started."""
    NOT_APPROVED = "NOT_APPROVED"
    """Left out of the approved dry run (refused in it, or not in the approved subset)."""
    DUPLICATE = "DUPLICATE"
    """The recommendation already has an execution of its own."""
    REFUSED = "REFUSED"
    """Policy refused it (protected, production, cooldown, busy, drifted): an answer, not a failure."""
    HELD = "HELD"
    """Not started: the worker's accounts file refuses its account now (disabled, say); it starts
    once the account is allowed again, or ends SKIPPED after the plan's pause_timeout."""


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"
    DECLINED = "declined"
    NOT_RUN = "not_run"
    OPEN = "open"


_FAILED = {S.FAILED.value, S.ROLLED_BACK.value, S.ROLLBACK_FAILED.value, S.REJECTED_BY_VALIDATION.value,
           ItemState.DUPLICATE.value, TIMED_OUT}
_DECLINED = {S.REJECTED.value, S.EXPIRED.value, S.CANCELLED.value}
_NOT_RUN = {ItemState.SKIPPED.value, ItemState.NOT_STARTED.value, ItemState.NOT_APPROVED.value}


def outcome(status: str) -> Outcome:
    """A failed item counts toward the error threshold and fails its wave; a declined one
    (a person said no, or nobody answered) and a refused one (policy said no) do neither."""
    if status in (S.COMPLETED.value, S.PLANNED.value, CONFIRMED):
        return Outcome.SUCCEEDED
    if status in _FAILED:
        return Outcome.FAILED
    if status in _DECLINED:
        return Outcome.DECLINED
    if status == ItemState.REFUSED.value:
        return Outcome.REFUSED
    if status in _NOT_RUN:
        return Outcome.NOT_RUN
    return Outcome.OPEN


class PlanItem(StrictModel):
    """One item as the workflow needs it to start its execution (or, a manual one, to wait for a person)."""

    position: int
    wave: int
    recommendation: Recommendation | None = None
    manual: ManualStep | None = None
    expected: Observation | None = Field(default=None, description="What the approved dry run saw.")

    @model_validator(mode="after")
    def _one_kind(self) -> PlanItem:
        if (self.recommendation is None) == (self.manual is None):
            raise ValueError("a plan item is a recommendation or a manual item")
        return self

    @property
    def item_id(self) -> str:
        entry = self.recommendation or self.manual
        assert entry is not None
        return entry.id


def read_ahead(item: PlanItem, following: list[PlanItem], limit: int = READ_AHEAD_MAX) -> list[str]:
    """The resources of the next items after `item` (in the order they start) of the same kind,
    account and region, at most `limit`, each once: what `item`'s validation reads ahead for them.

    Same kind, because a kind reads its resource with the same describes (a volume's id in an
    instance filter would only be wasted), and the next ones because a plan starts its items in
    order: by the time they validate, the answer is a fraction of a second old.
    """
    rec = item.recommendation
    if rec is None or limit <= 0:
        return []
    ahead: list[str] = []
    for nxt in following:
        other = nxt.recommendation
        if (other is not None and other.kind == rec.kind and other.account_id == rec.account_id
                and other.region == rec.region and other.resource_id != rec.resource_id
                and other.resource_id not in ahead):
            ahead.append(other.resource_id)
            if len(ahead) == limit:
                break
    return ahead


class ItemResult(StrictModel):
    """What the plan learned about one item; written to the store in batches."""

    plan_id: str
    position: int
    status: str
    execution_id: str | None = None
    reason: str | None = None
    actual_monthly_savings: float | None = None
    observed: Observation | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ItemSettled(StrictModel):
    """The signal an execution sends its plan once nothing more happens without a person."""

    execution_id: str
    status: ExecutionStatus
    reason: str | None = None
    refusal: Refusal | None = None
    actual_monthly_savings: float | None = None
    observed: Observation | None = None


class ItemWaiting(StrictModel):
    """The signal an execution sends its plan when it starts (or stops) waiting for a person."""

    execution_id: str
    waiting: bool


AWAITING_PERSON = "AWAITING_APPROVAL"
"""The count key of started items that wait for a person's decision."""
WAITING_FOR_PEOPLE = (AWAITING_PERSON, AWAITING_CONFIRMATION)
"""Count keys of started items that only a person can move (an approval; a manual item's answer)."""


class PlanStatus(StrEnum):
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_FAILURES = "COMPLETED_WITH_FAILURES"
    ABORTED = "ABORTED"
    FAILED = "FAILED"


PLAN_TERMINAL = frozenset({PlanStatus.COMPLETED, PlanStatus.COMPLETED_WITH_FAILURES, PlanStatus.ABORTED,
                           PlanStatus.FAILED})


class WaveState(StrEnum):
    PENDING = "PENDING"
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    NOT_STARTED = "NOT_STARTED"


class WaveProgress(StrictModel):
    index: int
    name: str
    mode: WaveMode
    size: int
    depends_on: list[int] = Field(default_factory=list)
    wait_seconds: float = 0
    state: WaveState = WaveState.PENDING
    counts: dict[str, int] = Field(default_factory=dict, description="Items per status.")
    started_at: datetime | None = None
    finished_at: datetime | None = None


class HeldAccount(StrictModel):
    """Items of one account the running plan holds: the worker's accounts file refuses the account now."""

    account_id: str
    reason: str = Field(description="The accounts file's refusal, as the worker read it last.")
    since: datetime = Field(description="When the plan first held an item of this account (the hold's bound "
                                        "counts from here).")
    positions: list[int] = Field(default_factory=list, description="The held items' positions in the plan.")


class PlanDecision(SignedDecision):
    """Approval (or rejection) of a dry-run report as a whole, or of a subset of it."""

    actor: str = Field(min_length=1, max_length=128)
    role: Role
    comment: str = Field(default="", max_length=2000)
    items: list[str] | None = Field(default=None, description="Recommendation ids to run; default: every planned item.")


class PlanControl(StrictModel):
    """Pause, resume or abort."""

    actor: str = Field(min_length=1, max_length=128)
    role: Role
    reason: str = Field(default="", max_length=2000)


class PlanEvent(StrictModel):
    at: datetime
    message: str


class PlanView(StrictModel):
    """The progress query's answer, and what the store keeps of a plan."""

    plan_id: str
    name: str = ""
    customer_ids: list[str]
    requested_by: str
    status: PlanStatus = PlanStatus.RUNNING
    phase: str = Field(default="execute", description="`dry_run` or `execute`.")
    dry_run: bool = False
    strategy: Strategy
    rate: RateControl
    reason: str | None = None
    total: int
    waves: list[WaveProgress]
    counts: dict[str, int] = Field(default_factory=dict)
    failures: int = Field(default=0, description="Failed items since the plan last resumed.")
    running: int = Field(default=0, description="Started items not yet settled (those awaiting a person too).")
    awaiting_person: int = Field(default=0, description="Started items waiting for a person: an approval, or "
                                                        "a manual item's confirmation.")
    approval: PlanApproval | None = Field(default=None, description="Who approved the dry run, and when.")
    not_approved: int = Field(default=0, description="Items left out of the approved dry run.")
    manual: list[ManualProgress] = Field(default_factory=list,
                                         description="Manual items: instructions, who may answer, the answer.")
    held: list[HeldAccount] = Field(default_factory=list,
                                    description="Accounts whose items wait: the accounts file refuses them now.")
    events: list[PlanEvent] = Field(default_factory=list)
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    estimated_monthly_savings: float = 0.0
    actual_monthly_savings: float = 0.0
    sequence: int = 0


class PlanInput(StrictModel):
    """The workflow's input: the plan as submitted, or, after continue-as-new, as it stood."""

    options: ExecutionOptions
    policy: Policy = Field(default_factory=Policy)
    account_policies: dict[str, Policy] = Field(
        default_factory=dict,
        description="Account id -> the policy with that account's overrides applied (the accounts file at "
                    "submit); an account not named here gets `policy`.")
    view: PlanView
    cursor: PlanCursor | None = None
    check_accounts: bool = Field(
        default=False, description="Ask the worker's accounts file before items start and hold the refused "
                                   "(set when the submitter has an accounts file, as the edge checks one).")
    told: dict[str, int] = Field(default_factory=dict,
                                 description="Notifications sent per event so far (the n of the next dedup key).")
    history_limit: int = Field(default=10_000, ge=100,
                               description="Continue as new past this many history events (tests lower it).")

    def policy_for(self, account_id: str) -> Policy:
        """The policy an item in `account_id` runs under."""
        return self.account_policies.get(account_id, self.policy)


class PlanCursor(StrictModel):
    """Where a continued plan picks up: the wave and the next item position in it."""

    wave: int
    offset: int
    succeeded_in_wave: int = 0
    failed_waves: list[int] = Field(default_factory=list)
    phase_done: bool = False


class ItemPage(StrictModel):
    plan_id: str
    wave: int
    offset: int
    limit: int
    approved_only: bool = False
    positions: list[int] | None = Field(default=None, description="Exactly these items (held ones released), "
                                                                  "instead of the wave's page at offset.")


PlanInput.model_rebuild()


def needs_person(view: PlanView) -> bool:
    """Only a person can move the plan now: its dry run awaits approval, it is paused, or every
    item it started waits for an approval (a free slot would have started the next item)."""
    if view.status in (PlanStatus.AWAITING_APPROVAL, PlanStatus.PAUSED):
        return True
    return view.status is PlanStatus.RUNNING and 0 < view.running <= view.awaiting_person


def final_status(view: PlanView, aborted_because: str | None) -> tuple[PlanStatus, str]:
    """How a plan that ran to its end reads: a refusal by policy is an answer, a person's no or
    an approver's leaving an item out is not a failure, a dry run no item passed is."""
    if aborted_because is not None:
        return PlanStatus.ABORTED, aborted_because
    tally: dict[Outcome, int] = {}
    for status, n in view.counts.items():
        if status == ItemState.NOT_APPROVED.value:
            continue  # left out on purpose by the approver
        tally[outcome(status)] = tally.get(outcome(status), 0) + n
    succeeded, failed = tally.get(Outcome.SUCCEEDED, 0), tally.get(Outcome.FAILED, 0)
    others = sum(n for k, n in tally.items() if k not in (Outcome.SUCCEEDED, Outcome.REFUSED))
    summary = ", ".join(f"{n} {s}" for s, n in sorted(view.counts.items()))
    if view.phase == "dry_run" and succeeded == 0:
        return PlanStatus.FAILED, f"no item passed the dry run ({summary})"
    refused = tally.get(Outcome.REFUSED, 0)
    if others == 0 and refused:
        return PlanStatus.COMPLETED, f"done; {refused} refused by policy ({summary})"
    if others == 0:
        return PlanStatus.COMPLETED, f"every item done ({summary})"
    if succeeded == 0 and failed > 0:
        return PlanStatus.FAILED, f"no item succeeded ({summary})"
    return PlanStatus.COMPLETED_WITH_FAILURES, summary
