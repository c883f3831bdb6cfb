"""The contract every action kind implements, and the registry that finds it by name.

A kind is one class in one module of this package, decorated with `@register`.
It converges rather than scripts: `apply` and `revert` look at the live resource
and do the next missing step (or nothing), raising `InProgress` while AWS is
still transitioning, so a retried or re-run activity never changes twice.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar, Generic

from botocore.exceptions import ClientError
from pydantic import ValidationError
from temporalio import activity
from typing_extensions import TypeVar

from activities.aws import SessionFactory
from activities.errors import Refused, client_error_code
from activities.resources import resource_id_problem
from activities.resources.base import Resource, ResourceState, tags_of
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import ActionTraits, RiskLevel
from domain.recommendation import Recommendation
from domain.watch import WatchedMetric

P = TypeVar("P", bound=StrictModel)
S = TypeVar("S", bound=ResourceState, default=Any)

__all__ = ["BACKUP_TAG", "Action", "action_class", "may_have_made_it", "register", "registry", "resource_id_problem",
           "tags_of"]

BACKUP_TAG = "reclaim:execution-id"
"""Tag carried by every backup Reclaim creates: how a retried backup finds the first one."""


def may_have_made_it() -> bool:
    """Whether an earlier attempt of this step may already have made what it is about to make (a
    backup found again by its tag): every attempt but the first, and any call outside an activity.

    A first attempt has no earlier one: Temporal counts an attempt whose worker died or timed out,
    so a step that ran at all is asked again as attempt 2 or later. Its lookup by tag, one AWS
    request per backup (DescribeSnapshots filtered by tag, which AWS answers from every snapshot
    of the account), is therefore skipped. A workflow reset to before the backup starts a new
    first attempt, and makes a second backup rather than finding the first.
    """
    return not activity.in_activity() or activity.info().attempt > 1


class Action(ABC, Generic[P, S]):
    """One action kind. Subclasses set the class attributes and implement the steps.

    `resource` is the resource the kind acts on (activities/resources/); `S` is its state model,
    so `self.state(seen)` is typed. `resource_type` (the CloudFormation type) follows from it.
    """

    kind: ClassVar[str]
    resource: ClassVar[type[Resource[Any]]]
    resource_type: ClassVar[str]
    params_model: ClassVar[type[StrictModel]]
    reversible: ClassVar[bool]
    base_risk: ClassVar[RiskLevel]
    destroys_data: ClassVar[bool] = False
    expected_duration: ClassVar[timedelta] = timedelta(minutes=15)
    """Backup to verified, on a quiet account: a change window must have this much left to start it."""
    watch_period: ClassVar[timedelta] = timedelta(0)
    """How long the resource's metrics are watched after the change; 0: not."""
    apply_deadline: ClassVar[timedelta | None] = None
    """Set by a kind whose apply waits for something slow (a launch) longer than MUTATE_DEADLINE; its
    apply must then heartbeat at least every APPLY_HEARTBEAT (workflows/options.py)."""
    watched: ClassVar[tuple[WatchedMetric, ...]] = ()
    """The CloudWatch metrics that would show the change hurt the workload (`domain/watch.py`)."""
    permissions: ClassVar[tuple[str, ...]]
    volatile_state: ClassVar[frozenset[str]] = frozenset()
    """Observed state keys that change on their own (sizes, transient statuses): not drift."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "resource" in vars(cls):
            cls.resource_type = cls.resource.cfn_type

    def __init__(self, sessions: SessionFactory, recommendation: Recommendation, execution_id: str) -> None:
        self.sessions = sessions
        self.rec = recommendation
        self.execution_id = execution_id
        self.params: P = self.parse_params(recommendation.params)  # type: ignore[assignment]

    @classmethod
    def parse_params(cls, params: dict[str, Any]) -> StrictModel:
        try:
            return cls.params_model.model_validate(params)
        except ValidationError as exc:
            problems = "; ".join(
                f"params.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise Refused(f"invalid params for {cls.kind}: {problems}") from None

    @classmethod
    def traits(cls) -> ActionTraits:
        return ActionTraits(
            kind=cls.kind,
            resource_type=cls.resource_type,
            reversible=cls.reversible,
            base_risk=cls.base_risk,
            destroys_data=cls.destroys_data,
            expected_duration=cls.expected_duration,
            watch_period=cls.watch_period,
            apply_deadline=cls.apply_deadline,
        )

    def poll_after_seconds(self) -> float:
        """How long the workflow waits before asking an apply that is still under way again."""
        return 30.0

    def progress(self) -> dict[str, Any]:
        """What an apply still under way has done so far that the workflow keeps (JSON values)."""
        return {}

    def client(self, service: str) -> Any:
        return self.sessions.client(self.rec.account_id, self.rec.region, service)

    @property
    def aws(self) -> Any:
        """The boto3 client of the resource's service (the permission meta-test reads `self.aws.x`
        as `<resource.service>:X`)."""
        return self.client(self.resource.service)

    def state(self, seen: Observation) -> S:
        """`seen.state` as the resource's typed model: a misspelt field fails mypy, not a workflow."""
        return self.resource.state(seen)

    # ---- the steps -------------------------------------------------------------------

    def inspect(self) -> Observation:
        """Read the live resource; Refused when it does not exist."""
        return self.resource.observe(self.client, self.rec.resource_id)

    @abstractmethod
    def refusal(self, seen: Observation) -> str | None:
        """Why the change must not go ahead (wrong state, drift from the recommendation)."""

    @abstractmethod
    def plan(self, seen: Observation) -> list[str]:
        """Human-readable steps the change would take: the dry-run report."""

    @abstractmethod
    def check_permissions(self, seen: Observation) -> list[str]:
        """Prove the mutating calls are allowed with `DryRun=True`; return the calls checked."""

    def unverified_permissions(self) -> list[str]:
        """Mutating calls that cannot be proven ahead (services without DryRun): said, not hidden."""
        return []

    def backup(self, seen: Observation) -> BackupRecord:
        """Save what is needed to revert. Must find-or-create (by BACKUP_TAG) when it creates."""
        return BackupRecord(kind=self.kind, resource_id=self.rec.resource_id, data=dict(seen.state))

    @abstractmethod
    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        """Do the next missing step toward the target; nothing when already there."""

    @abstractmethod
    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        """Confirm the target state; InProgress while transitioning, VerificationFailed if never."""

    @abstractmethod
    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        """Converge back to the state recorded before the change."""

    def cleanup(self, backup: BackupRecord) -> StepResult:
        """Delete backups once the rollback window has passed."""
        return StepResult(changed=False, message="nothing to clean up")

    def estimate_monthly_savings(self, seen: Observation) -> float:
        return self.rec.estimated_monthly_savings

    # ---- helpers for subclasses -------------------------------------------------------

    def client_token(self, step: str) -> str:
        """An idempotency token for a create in `step`, derived from the execution: a retried
        create (its first answer lost, or its resource not yet visible to a tag lookup, which
        AWS answers eventually consistently) returns the first resource instead of a second."""
        token = f"{self.execution_id}-{step}"
        if len(token) > 64:  # EC2's ClientToken limit
            token = hashlib.sha256(token.encode()).hexdigest()[:63 - len(step)] + "-" + step
        return token

    def dry_run(self, call: Callable[..., Any], label: str, **kwargs: Any) -> str:
        """Make an EC2-style call with DryRun=True; success is the DryRunOperation error."""
        try:
            call(DryRun=True, **kwargs)
        except ClientError as exc:
            if client_error_code(exc) == "DryRunOperation":
                return label
            raise
        return label

    def backup_tags(self) -> list[dict[str, str]]:
        return [
            {"Key": BACKUP_TAG, "Value": self.execution_id},
            {"Key": "reclaim:resource-id", "Value": self.rec.resource_id},
            {"Key": "reclaim:kind", "Value": self.kind},
        ]


# ---- registry ----------------------------------------------------------------------------

_REGISTRY: dict[str, type[Action[Any]]] = {}
_REQUIRED = ("kind", "resource", "params_model", "reversible", "base_risk", "permissions")

A = TypeVar("A", bound=type[Action[Any]])


def register(cls: A) -> A:
    missing = [name for name in _REQUIRED if not hasattr(cls, name)]
    if missing:
        raise TypeError(f"{cls.__name__} does not declare {', '.join(missing)}")
    if cls.kind in _REGISTRY and _REGISTRY[cls.kind] is not cls:
        raise TypeError(f"action kind {cls.kind} registered twice")
    _REGISTRY[cls.kind] = cls
    return cls


class UnknownAction(LookupError):
    pass


_loaded = False


def _load_all() -> None:
    """Import every kind module once, so importing one kind first cannot hide the others."""
    global _loaded
    if _loaded:
        return
    package = importlib.import_module("activities.actions")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"activities.actions.{info.name}")
    _loaded = True


def registry() -> dict[str, type[Action[Any]]]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def action_class(kind: str) -> type[Action[Any]]:
    kinds = registry()
    try:
        return kinds[kind]
    except KeyError:
        raise UnknownAction(
            f"unknown action kind {kind!r}; known kinds: {', '.join(kinds)}"
        ) from None
