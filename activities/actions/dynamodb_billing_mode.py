"""dynamodb.billing_mode: switch a table (and its GSIs) between on-demand and provisioned capacity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import Field, model_validator

from activities.actions.base import Action, register
from activities.errors import InProgress, RevertImpossible, VerificationFailed, client_error_code
from activities.resources.dynamodb_table import DynamodbTable, IndexState, TableState, table_state, table_tags
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel
from domain.pricing import hours_per_month, region_factor, section
from domain.watch import DYNAMODB_WORKLOAD

Mode = Literal["PAY_PER_REQUEST", "PROVISIONED"]
#: Reclaim's reading of AWS's limit on switching a table to on-demand (conservative: once per 24 hours).
ON_DEMAND_COOLDOWN = timedelta(hours=24)
_AWS_REFUSALS = frozenset({"LimitExceededException", "ValidationException"})


class BillingModeParams(StrictModel):
    expected_mode: Mode = Field(description="Refuse when the table is billed otherwise (drift).")
    target_mode: Mode
    target_read_capacity: int | None = Field(default=None, ge=1, description="Table and each GSI; PROVISIONED only.")
    target_write_capacity: int | None = Field(default=None, ge=1, description="Table and each GSI; PROVISIONED only.")
    monthly_read_requests: float | None = Field(default=None, ge=0, description="Read request units a month.")
    monthly_write_requests: float | None = Field(default=None, ge=0, description="Write request units a month.")

    @model_validator(mode="after")
    def _consistent(self) -> BillingModeParams:
        if self.target_mode == self.expected_mode:
            raise ValueError("target_mode must differ from expected_mode")
        capacities = (self.target_read_capacity, self.target_write_capacity)
        if self.target_mode == "PROVISIONED" and None in capacities:
            raise ValueError("PROVISIONED needs target_read_capacity and target_write_capacity")
        if self.target_mode == "PAY_PER_REQUEST" and capacities != (None, None):
            raise ValueError("target capacities are only for PROVISIONED")
        return self


def on_demand_allowed_from(last_switch: str | None, now: datetime) -> datetime | None:
    """When the table may be switched to on-demand again; None when it may be now."""
    if not last_switch:
        return None
    moment = datetime.fromisoformat(last_switch)
    allowed = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)) + ON_DEMAND_COOLDOWN
    return allowed if allowed > now else None


def _pt(read: int, write: int) -> dict[str, int]:
    return {"ReadCapacityUnits": read, "WriteCapacityUnits": write}


@register
class DynamodbBillingMode(Action[BillingModeParams, TableState]):
    """Switch a DynamoDB table between on-demand (PAY_PER_REQUEST) and provisioned capacity; when
    switching to PROVISIONED, every global secondary index gets the target capacities too. AWS
    limits switches to on-demand (refused within 24 hours of the last one); switches to
    provisioned are allowed any time. Reverting to on-demand is subject to the same AWS limit:
    if AWS refuses (LimitExceededException / ValidationException) the revert fails with AWS's
    reason rather than retrying silently.

    Example recommendation::

        {"id": "rec-ddb-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "dynamodb.billing_mode", "resource_id": "orders",
         "params": {"expected_mode": "PAY_PER_REQUEST", "target_mode": "PROVISIONED",
                    "target_read_capacity": 50, "target_write_capacity": 20,
                    "monthly_read_requests": 300000000, "monthly_write_requests": 60000000},
         "estimated_monthly_savings": 100.0}
    """

    kind = "dynamodb.billing_mode"
    resource = DynamodbTable
    params_model = BillingModeParams
    reversible = True
    base_risk = RiskLevel.LOW
    watched = DYNAMODB_WORKLOAD
    watch_period = timedelta(hours=1)
    volatile_state = frozenset({"status"})
    permissions = ("dynamodb:DescribeTable", "dynamodb:ListTagsOfResource", "dynamodb:UpdateTable")

    def _live(self) -> TableState | None:
        return table_state(self.aws, self.rec.resource_id)

    def refusal(self, seen: Observation) -> str | None:
        s, p = self.state(seen), self.params
        if s.mode != p.expected_mode:
            return f"drift: table is billed {s.mode}, the recommendation assumed {p.expected_mode}"
        busy = [f"index {n} is {g.status}" for n, g in s.gsis.items() if g.status != "ACTIVE"]
        if s.status != "ACTIVE" or busy:
            return f"table is {s.status}" + "".join(f", {b}" for b in busy) + "; it must be ACTIVE"
        allowed = on_demand_allowed_from(s.last_switch_to_on_demand, datetime.now(UTC))
        if p.target_mode == "PAY_PER_REQUEST" and allowed is not None:
            return (f"the table was switched to on-demand at {s.last_switch_to_on_demand}; AWS limits switches "
                    f"to on-demand per 24 hours, allowed again from {allowed.isoformat()}")
        return None

    def _target(self, gsis: dict[str, IndexState] | dict[str, Any]) -> dict[str, Any]:
        read, write = self.params.target_read_capacity or 0, self.params.target_write_capacity or 0
        return {"mode": self.params.target_mode, "read": read, "write": write,
                "gsis": {name: {"read": read, "write": write} for name in gsis}}

    def plan(self, seen: Observation) -> list[str]:
        name, s = self.rec.resource_id, self.state(seen)
        t = self._target(s.gsis)
        if t["mode"] == "PAY_PER_REQUEST":
            return [f"switch table {name} from {s.mode} to on-demand (PAY_PER_REQUEST), GSIs follow"]
        return [f"switch table {name} to PROVISIONED with {t['read']} RCU / {t['write']} WCU"] + [
            f"set index {g} to {t['read']} RCU / {t['write']} WCU" for g in t["gsis"]]

    def check_permissions(self, seen: Observation) -> list[str]:
        """DynamoDB has no DryRun: the reads are made, UpdateTable is reported unverified."""
        live = self._live()
        table_tags(self.aws, live.arn if live else self.state(seen).arn)
        return ["dynamodb:DescribeTable", "dynamodb:ListTagsOfResource"]

    def unverified_permissions(self) -> list[str]:
        return ["dynamodb:UpdateTable"]

    def backup(self, seen: Observation) -> BackupRecord:
        s = self.state(seen)
        data = {"mode": s.mode, "read": s.read, "write": s.write,
                "gsis": {n: {"read": g.read, "write": g.write} for n, g in s.gsis.items()}}
        return BackupRecord(kind=self.kind, resource_id=self.rec.resource_id, data=data)

    @staticmethod
    def _matches(live: TableState, want: dict[str, Any]) -> bool:
        if live.mode != want["mode"]:
            return False
        if want["mode"] == "PAY_PER_REQUEST":
            return True
        fallback = {"read": want["read"], "write": want["write"]}
        pairs = [((live.read, live.write), want)] + [
            ((g.read, g.write), want["gsis"].get(n, fallback)) for n, g in live.gsis.items()]
        return all(have == (w["read"], w["write"]) for have, w in pairs)

    @staticmethod
    def _settling(live: TableState) -> bool:
        return live.status != "ACTIVE" or any(g.status != "ACTIVE" for g in live.gsis.values())

    def _converge(self, want: dict[str, Any], missing: type[Exception]) -> StepResult:
        """Take the table to `want` (mode, capacities); one UpdateTable with only what differs."""
        live, name = self._live(), self.rec.resource_id
        if live is None:
            raise missing(f"DynamoDB table {name} no longer exists")
        if self._matches(live, want):
            return StepResult(changed=False, message=f"table {name} is {want['mode']} ({live.status})")
        if self._settling(live):
            raise InProgress(f"table {name} is {live.status}; will switch to {want['mode']} once ACTIVE")
        args: dict[str, Any] = {"TableName": name}
        switching = live.mode != want["mode"]
        if switching:
            args["BillingMode"] = want["mode"]
        if want["mode"] == "PROVISIONED":
            if switching or (live.read, live.write) != (want["read"], want["write"]):
                args["ProvisionedThroughput"] = _pt(want["read"], want["write"])
            updates = []
            for index, g in live.gsis.items():
                cap = want["gsis"].get(index, {"read": want["read"], "write": want["write"]})
                if switching or (g.read, g.write) != (cap["read"], cap["write"]):
                    updates.append({"Update": {"IndexName": index, "ProvisionedThroughput": _pt(cap["read"], cap["write"])}})
            if updates:
                args["GlobalSecondaryIndexUpdates"] = updates
        self.aws.update_table(**args)
        return StepResult(changed=True, message=f"table {name}: switch to {want['mode']} requested")

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        return self._converge(self._target(backup.data["gsis"]), VerificationFailed)

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        live, want = self._live(), self._target(backup.data["gsis"])
        if live is None:
            raise VerificationFailed(f"DynamoDB table {self.rec.resource_id} disappeared")
        if self._settling(live):
            raise InProgress(f"table is {live.status}")
        if self._matches(live, want):
            return StepResult(changed=False, message=f"table is ACTIVE and {want['mode']}")
        raise VerificationFailed(f"table is {live.mode} ({live.read} RCU / {live.write} WCU), "
                                 f"expected {want['mode']}")

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        try:
            return self._converge(dict(backup.data), RevertImpossible)
        except ClientError as exc:
            code = client_error_code(exc)
            if code not in _AWS_REFUSALS:
                raise
            raise RevertImpossible(f"AWS refused to switch table {self.rec.resource_id} back to "
                                   f"{backup.data['mode']}: {code}: {exc.response['Error'].get('Message', '')}"
                                   " (switches to on-demand are limited per 24 hours)") from exc

    def estimate_monthly_savings(self, seen: Observation) -> float:
        p = self.params
        if p.monthly_read_requests is None or p.monthly_write_requests is None:
            return self.rec.estimated_monthly_savings
        price, factor = section("dynamodb"), region_factor(self.rec.region)
        on_demand = (p.monthly_read_requests * price["read_request_million"]
                     + p.monthly_write_requests * price["write_request_million"]) / 1e6
        s = self.state(seen)
        caps = self._target(s.gsis) if p.target_mode == "PROVISIONED" else s.model_dump()
        units = [(caps["read"], caps["write"])] + [(g["read"], g["write"]) for g in caps["gsis"].values()]
        provisioned = sum(r * price["rcu_hour"] + w * price["wcu_hour"] for r, w in units) * hours_per_month()
        saving = on_demand - provisioned if p.target_mode == "PROVISIONED" else provisioned - on_demand
        return saving * factor
