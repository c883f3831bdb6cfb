"""lambda.memory: change a function's memory size; revert sets the previous size back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError
from pydantic import Field, model_validator

from activities.actions.base import Action, register
from activities.errors import InProgress, Refused, RevertImpossible, VerificationFailed, client_error_code
from activities.resources.lambda_function import FunctionState, LambdaFunction, function_config
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel
from domain.pricing import flat
from domain.watch import LAMBDA_WORKLOAD

#: UpdateFunctionConfiguration while another update runs: not yet, never fatal.
_BUSY_CODES = frozenset({"ResourceConflictException"})


class MemoryParams(StrictModel):
    expected_memory_mb: int = Field(ge=128, le=10240, description="Refuse when the memory differs (drift).")
    target_memory_mb: int = Field(ge=128, le=10240)
    monthly_gb_seconds: float | None = Field(
        default=None, ge=0, description="GB-seconds a month at the expected memory; savings are priced from it."
    )

    @model_validator(mode="after")
    def _differ(self) -> MemoryParams:
        if self.expected_memory_mb == self.target_memory_mb:
            raise ValueError("expected_memory_mb and target_memory_mb must differ")
        return self


@register
class LambdaMemory(Action[MemoryParams, FunctionState]):
    """Right-size a Lambda function's memory ($LATEST; published versions are immutable, so aliases
    pointing at them keep their memory until the next publish). Less memory also means less CPU:
    durations may grow, which the savings estimate does not model.

    Example recommendation::

        {"id": "rec-lambda-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "lambda.memory", "resource_id": "thumbnailer",
         "params": {"expected_memory_mb": 3008, "target_memory_mb": 1024,
                    "monthly_gb_seconds": 2500000}, "estimated_monthly_savings": 27.44}
    """

    kind = "lambda.memory"
    resource = LambdaFunction
    params_model = MemoryParams
    reversible = True
    base_risk = RiskLevel.LOW
    watched = LAMBDA_WORKLOAD
    watch_period = timedelta(hours=1)
    volatile_state = frozenset({"state", "last_update_status"})
    permissions = ("lambda:GetFunctionConfiguration", "lambda:ListTags", "lambda:UpdateFunctionConfiguration")

    @property
    def function(self) -> str:
        return self.rec.resource_id

    def _config(self, missing: type[Exception]) -> dict[str, Any]:
        config = function_config(self.aws, self.function)
        if config is None:
            raise missing(LambdaFunction.missing.format(id=self.function))
        return config

    def refusal(self, seen: Observation) -> str | None:
        s, expected = self.state(seen), self.params.expected_memory_mb
        if s.memory_mb != expected:
            return f"drift: memory is {s.memory_mb} MB, the recommendation assumed {expected} MB"
        if s.state not in (None, "Active", "Inactive"):
            return f"function is {s.state}, not Active"
        if s.last_update_status == "InProgress":
            return "an update of the function is in progress; try again once it has finished"
        return None

    def plan(self, seen: Observation) -> list[str]:
        return [f"set the memory of {self.function} from {self.state(seen).memory_mb} MB "
                f"to {self.params.target_memory_mb} MB"]

    def check_permissions(self, seen: Observation) -> list[str]:
        """Lambda has no DryRun: the reads are made, the write listed as unverified."""
        self.inspect()
        return ["lambda:GetFunctionConfiguration", "lambda:ListTags"]

    def unverified_permissions(self) -> list[str]:
        return ["lambda:UpdateFunctionConfiguration"]

    def backup(self, seen: Observation) -> BackupRecord:
        data = {"memory_mb": self._config(Refused)["MemorySize"]}
        return BackupRecord(kind=self.kind, resource_id=self.function, data=data)

    def _set(self, memory_mb: int) -> None:
        try:
            self.aws.update_function_configuration(FunctionName=self.function, MemorySize=memory_mb)
        except ClientError as exc:
            if client_error_code(exc) in _BUSY_CODES:
                raise InProgress(f"another update of {self.function} is in progress") from exc
            raise

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        config, target = self._config(Refused), self.params.target_memory_mb
        if config["MemorySize"] == target:
            return StepResult(changed=False, message=f"memory is already {target} MB")
        if config["MemorySize"] != backup.data["memory_mb"]:
            raise Refused(f"drift: memory is now {config['MemorySize']} MB, "
                          f"it was {backup.data['memory_mb']} MB at backup")
        if config.get("LastUpdateStatus") == "InProgress":
            raise InProgress("another update of the function is in progress")
        self._set(target)
        return StepResult(changed=True, message=f"memory set to {target} MB (was {config['MemorySize']} MB)")

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        config, target = self._config(VerificationFailed), self.params.target_memory_mb
        status = config.get("LastUpdateStatus")
        if status == "InProgress":
            raise InProgress("the function update is in progress")
        if status == "Failed":
            raise VerificationFailed(f"the function update failed: {config.get('LastUpdateStatusReason')}")
        if config["MemorySize"] != target:
            raise VerificationFailed(f"memory is {config['MemorySize']} MB, expected {target} MB")
        return StepResult(changed=False, message=f"memory is {target} MB")

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        """Waits (InProgress) for the update back to finish, so a reverted function is usable."""
        config, original = self._config(RevertImpossible), int(backup.data["memory_mb"])
        if config.get("LastUpdateStatus") == "InProgress":
            raise InProgress("the function update is in progress")
        if config["MemorySize"] == original:
            return StepResult(changed=False, message=f"memory is {original} MB")
        self._set(original)
        raise InProgress(f"memory set back to {original} MB; waiting for the update to finish")

    def estimate_monthly_savings(self, seen: Observation) -> float:
        p = self.params
        if p.monthly_gb_seconds is None:
            return self.rec.estimated_monthly_savings
        saved = p.monthly_gb_seconds * (1 - p.target_memory_mb / p.expected_memory_mb)
        return saved * flat("lambda_gb_second", self.rec.region)
