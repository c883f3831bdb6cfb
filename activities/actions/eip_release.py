"""eip.release: release an unassociated Elastic IP; revert allocates a new one (the public IP changes)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from pydantic import Field

from activities.actions.base import Action, register
from activities.errors import Refused, VerificationFailed, client_error_code
from activities.resources.base import restorable_tags, tag_filters
from activities.resources.elastic_ip import MISSING, AddressState, ElasticIp, association, describe_address
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel
from domain.pricing import flat, hours_per_month

RESTORED_FOR = "reclaim:restored-for"


class ReleaseParams(StrictModel):
    expected_public_ip: str | None = Field(default=None, description="Refuse on a different public IP (drift).")


@register
class EipRelease(Action[ReleaseParams, AddressState]):
    """Release an idle (unassociated) Elastic IP; `resource_id` is its allocation id. Reversible
    but not exactly: revert allocates a NEW address with the same tags, and its public IP differs.

    Example recommendation::

        {"id": "rec-eip-release-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "eip.release", "resource_id": "eipalloc-0123456789abcdef0",
         "params": {"expected_public_ip": "203.0.113.10"}, "estimated_monthly_savings": 3.65}
    """

    kind = "eip.release"
    resource = ElasticIp
    params_model = ReleaseParams
    reversible = True
    base_risk = RiskLevel.MEDIUM
    permissions = ("ec2:DescribeAddresses", "ec2:ReleaseAddress", "ec2:AllocateAddress", "ec2:CreateTags")

    def _address(self) -> dict[str, Any] | None:
        return describe_address(self.aws, self.rec.resource_id)

    def refusal(self, seen: Observation) -> str | None:
        s, expected = self.state(seen), self.params.expected_public_ip
        if expected and s.public_ip != expected:
            return f"drift: public IP is {s.public_ip}, the recommendation assumed {expected}"
        if s.associated_with:
            return f"address {s.public_ip} is associated with {s.associated_with}; it is in use"
        return None

    def plan(self, seen: Observation) -> list[str]:
        ip = self.state(seen).public_ip
        return [f"release {self.rec.resource_id} ({ip})",
                f"on revert: allocate a NEW address with the same tags; the public IP {ip} is not kept"]

    def _allocation(self, original: dict[str, Any]) -> dict[str, Any]:
        """AllocateAddress arguments for a stand-in of the address `backup` recorded."""
        marks = [{"Key": RESTORED_FOR, "Value": self.execution_id},
                 {"Key": "reclaim:restored-from", "Value": f"{self.rec.resource_id} {original['public_ip']}"}]
        spec: dict[str, Any] = {"Domain": "vpc", "TagSpecifications": [
            {"ResourceType": "elastic-ip", "Tags": [*restorable_tags(original.get("tags") or {}), *marks]}]}
        pool, group = original.get("public_ipv4_pool"), original.get("network_border_group")
        if pool and pool.startswith("ipv4pool-"):  # a BYOIP pool; "amazon" is the default
            spec["PublicIpv4Pool"] = pool
        if group:
            spec["NetworkBorderGroup"] = group
        return spec

    def check_permissions(self, seen: Observation) -> list[str]:
        return [
            self.dry_run(self.aws.release_address, "ec2:ReleaseAddress", AllocationId=self.rec.resource_id),
            self.dry_run(self.aws.allocate_address, "ec2:AllocateAddress",
                         **self._allocation({**self.state(seen).model_dump(), "tags": seen.tags})),
        ]

    def backup(self, seen: Observation) -> BackupRecord:
        s = self.state(seen)
        data = {"public_ip": s.public_ip, "domain": s.domain, "network_border_group": s.network_border_group,
                "public_ipv4_pool": s.public_ipv4_pool, "tags": dict(seen.tags)}
        return BackupRecord(kind=self.kind, resource_id=self.rec.resource_id, data=data)

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        address = self._address()
        if address is None:
            return StepResult(changed=False, message=f"{self.rec.resource_id} already released")
        if association(address):
            raise Refused(f"address {address['PublicIp']} was associated with {association(address)} "
                          "since validation")
        try:
            self.aws.release_address(AllocationId=self.rec.resource_id)
        except ClientError as exc:
            if client_error_code(exc) in MISSING:
                return StepResult(changed=False, message=f"{self.rec.resource_id} already released")
            raise
        return StepResult(changed=True, message=f"released {self.rec.resource_id} ({address['PublicIp']})")

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        if self._address() is None:
            return StepResult(changed=False, message=f"{self.rec.resource_id} is released")
        raise VerificationFailed(f"{self.rec.resource_id} is still allocated")

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        if self._address() is not None:
            return StepResult(changed=False, message=f"{self.rec.resource_id} is still allocated")
        mine = self.aws.describe_addresses(Filters=tag_filters({RESTORED_FOR: self.execution_id}))["Addresses"]
        address, created = (dict(mine[0]) if mine else None), False
        if address is None:
            address, created = dict(self.aws.allocate_address(**self._allocation(backup.data))), True
        old_ip, new_id, new_ip = backup.data["public_ip"], address["AllocationId"], address["PublicIp"]
        note = f"a new address was allocated: the public IP changed from {old_ip} to {new_ip}"
        return StepResult(changed=created, message=note,
                          data={"new_allocation_id": new_id, "new_public_ip": new_ip, "note": note})

    def estimate_monthly_savings(self, seen: Observation) -> float:
        return round(flat("eip_idle_hourly", self.rec.region) * hours_per_month(), 2)
