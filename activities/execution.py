"""The generic step activities: each dispatches to the recommendation's action kind.

Sync functions on the worker's thread pool (boto3 blocks); errors leave as
`ApplicationError`s typed by AWS error code (see activities/errors.py).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import ClientError
from temporalio import activity

from activities.actions.base import Action, UnknownAction, action_class
from activities.aws import SessionFactory
from activities.errors import InProgress, Refused, client_error_code, to_application_error
from activities.gateway.coalesce import validating
from domain.execution import (
    ActionStepInput,
    Assessment,
    BackupRecord,
    PermissionReport,
    StepResult,
    ValidateInput,
    drift,
)
from domain.recommendation import Recommendation

T = TypeVar("T")

_DENIED_CODES = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})


def _translated(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # translated, never swallowed
            translated = to_application_error(exc)
            if translated is exc:
                raise
            raise translated from exc

    return wrapper


class ExecutionActivities:
    """Holds the session factory the worker wires in (tests wire one pointing at moto)."""

    def __init__(self, sessions: SessionFactory) -> None:
        self.sessions = sessions
        self._verified_accounts: set[tuple[str, str]] = set()
        self._checking: dict[tuple[str, str], threading.Lock] = {}

    def _action(self, execution_id: str, recommendation: Recommendation) -> Action[Any]:
        return action_class(recommendation.kind)(self.sessions, recommendation, execution_id)

    @activity.defn(name="validate")
    @_translated
    def validate(self, request: ValidateInput) -> Assessment:
        """Read-only: run as a local activity. Refusals are results, not failures."""
        rec = request.recommendation
        since = request.fresh_since.timestamp() if request.fresh_since is not None else None
        try:
            action = self._action(request.execution_id, rec)
            self._check_account(rec)
            with validating(rec.resource_id, request.read_ahead, since):
                seen = action.inspect()
                reason = action.refusal(seen)
        except (Refused, UnknownAction) as exc:
            return Assessment(valid=False, reason=str(exc).strip("'\""))
        if reason is None and request.expected is not None:
            changes = drift(request.expected, seen, action.volatile_state)
            if changes:
                reason = "drifted since the approved dry run: " + "; ".join(changes)
        return Assessment(
            valid=reason is None,
            reason=reason,
            traits=action.traits(),
            observed=seen,
            estimated_monthly_savings=action.estimate_monthly_savings(seen),
            plan=action.plan(seen) if reason is None else [],
        )

    def _check_account(self, rec: Recommendation) -> None:
        """Credentials for the wrong account are a refusal, not a change in the wrong place.

        Asked once per account and region by one thread while the others wait for its answer: a
        plan's first validations there come together, and each asked on its own (race N=100: 9
        GetCallerIdentity where 2 do)."""
        key = (rec.account_id, rec.region)
        if key in self._verified_accounts:
            return
        with self._checking.setdefault(key, threading.Lock()):
            if key in self._verified_accounts:
                return
            sts = self.sessions.client(rec.account_id, rec.region, "sts")
            actual = sts.get_caller_identity()["Account"]
            if actual != rec.account_id:
                raise Refused(
                    f"credentials are for account {actual}, the recommendation is for {rec.account_id}"
                )
            self._verified_accounts.add(key)

    @activity.defn(name="check_permissions")
    @_translated
    def check_permissions(self, step: ActionStepInput) -> PermissionReport:
        action = self._action(step.execution_id, step.recommendation)
        try:
            checked = action.check_permissions(step.observed)
        except ClientError as exc:
            if client_error_code(exc) in _DENIED_CODES:
                return PermissionReport(allowed=False, checked=[], denied=[exc.operation_name])
            raise
        return PermissionReport(allowed=True, checked=checked, unverified=action.unverified_permissions())

    @activity.defn(name="backup")
    @_translated
    def backup(self, step: ActionStepInput) -> BackupRecord:
        return self._action(step.execution_id, step.recommendation).backup(step.observed)

    @activity.defn(name="apply")
    @_translated
    def apply(self, step: ActionStepInput) -> StepResult:
        """Idempotent, so it can be asked again: a kind that waits for a slow launch hands its
        "not yet" back (`hand_back`) and the workflow asks again after a durable timer."""
        action = self._action(step.execution_id, step.recommendation)
        try:
            return action.apply(step.observed, _backup(step))
        except InProgress as exc:
            if not step.hand_back:
                raise
            return StepResult(changed=True, message=str(exc), data={
                "in_progress": True, "poll_after_seconds": action.poll_after_seconds(), **action.progress()})

    @activity.defn(name="verify")
    @_translated
    def verify(self, step: ActionStepInput) -> StepResult:
        activity.heartbeat()
        return self._action(step.execution_id, step.recommendation).verify(step.observed, _backup(step))

    @activity.defn(name="revert")
    @_translated
    def revert(self, step: ActionStepInput) -> StepResult:
        return self._action(step.execution_id, step.recommendation).revert(step.observed, _backup(step))

    @activity.defn(name="cleanup")
    @_translated
    def cleanup(self, step: ActionStepInput) -> StepResult:
        return self._action(step.execution_id, step.recommendation).cleanup(_backup(step))

    def all(self) -> list[Callable[..., Any]]:
        return [self.validate, self.check_permissions, self.backup, self.apply, self.verify,
                self.revert, self.cleanup]


def _backup(step: ActionStepInput) -> BackupRecord:
    if step.backup is None:
        raise Refused("no backup recorded for this execution; refusing to act without one")
    return step.backup
