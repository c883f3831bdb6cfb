"""eip.release: release an unassociated Elastic IP; revert allocates a new one (the public IP changes)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from pydantic import Field

from activities.actions._ebs import restorable_tags, tag_filters
from activities.actions.base import Action, register, tags_of
from activities.errors import Refused, VerificationFailed, client_error_code
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel
from domain.pricing import flat, hours_per_month

RESTORED_FOR = "reclaim:restored-for"
_MISSING = {"InvalidAllocationID.NotFound", "InvalidAllocationID.Malformed"}


class ReleaseParams(StrictModel):
    expected_public_ip: str | None = Field(default=None, description="Refuse on a different public IP (drift).")


def _association(address: dict[str, Any]) -> str | None:
    """What the address is associated with, or None (moto reports '' for none)."""
    if not (address.get("AssociationId") or address.get("InstanceId") or address.get("NetworkInterfaceId")):
        return None
    parts = [p for p in (address.get("InstanceId"), address.get("NetworkInterfaceId")) if p]
    return " / ".join(parts) or str(address["AssociationId"])


@register
class EipRelease(Action[ReleaseParams]):
    """Release an idle (unassociated) Elastic IP; `resource_id` is its allocation id. Reversible
    but not exactly: revert allocates a NEW address with the same tags, and its public IP differs.

    Example recommendation::

        {"id": "rec-eip-release-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "eip.release", "resource_id": "eipalloc-0123456789abcdef0",
         "params": {"expected_public_ip": "203.0.113.10"}, "estimated_monthly_savings": 3.65}
    """

    kind = "eip.release"
    resource_type = "AWS::EC2::EIP"
    params_model = ReleaseParams
    reversible = True
    base_risk = RiskLevel.MEDIUM
    permissions = ("ec2:DescribeAddresses", "ec2:ReleaseAddress", "ec2:AllocateAddress", "ec2:CreateTags")

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    def _address(self) -> dict[str, Any] | None:
        try:
            found = self.ec2.describe_addresses(AllocationIds=[self.rec.resource_id])["Addresses"]
        except ClientError as exc:
            if client_error_code(exc) in _MISSING:
                return None
            raise
        return dict(found[0]) if found else None

    def inspect(self) -> Observation:
        address = self._address()
        if address is None:
            raise Refused(f"Elastic IP {self.rec.resource_id} does not exist")
        return Observation(state={
            "public_ip": address["PublicIp"], "domain": address.get("Domain", "vpc"),
            "associated_with": _association(address),
            "network_border_group": address.get("NetworkBorderGroup"),
            "public_ipv4_pool": address.get("PublicIpv4Pool"),
        }, tags=tags_of(address.get("Tags")))

    def refusal(self, seen: Observation) -> str | None:
        ip, expected = seen.state["public_ip"], self.params.expected_public_ip
        if expected and ip != expected:
            return f"drift: public IP is {ip}, the recommendation assumed {expected}"
        if seen.state["associated_with"]:
            return f"address {ip} is associated with {seen.state['associated_with']}; it is in use"
        return None

    def plan(self, seen: Observation) -> list[str]:
        ip = seen.state["public_ip"]
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
            self.dry_run(self.ec2.release_address, "ec2:ReleaseAddress", AllocationId=self.rec.resource_id),
            self.dry_run(self.ec2.allocate_address, "ec2:AllocateAddress",
                         **self._allocation({**seen.state, "tags": seen.tags})),
        ]

    def backup(self, seen: Observation) -> BackupRecord:
        keys = ("public_ip", "domain", "network_border_group", "public_ipv4_pool")
        return BackupRecord(kind=self.kind, resource_id=self.rec.resource_id,
                            data={**{k: seen.state[k] for k in keys}, "tags": dict(seen.tags)})

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        address = self._address()
        if address is None:
            return StepResult(changed=False, message=f"{self.rec.resource_id} already released")
        if _association(address):
            raise Refused(f"address {address['PublicIp']} was associated with {_association(address)} "
                          "since validation")
        try:
            self.ec2.release_address(AllocationId=self.rec.resource_id)
        except ClientError as exc:
            if client_error_code(exc) in _MISSING:
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
        mine = self.ec2.describe_addresses(Filters=tag_filters({RESTORED_FOR: self.execution_id}))["Addresses"]
        address, created = (dict(mine[0]) if mine else None), False
        if address is None:
            address, created = dict(self.ec2.allocate_address(**self._allocation(backup.data))), True
        old_ip, new_id, new_ip = backup.data["public_ip"], address["AllocationId"], address["PublicIp"]
        note = f"a new address was allocated: the public IP changed from {old_ip} to {new_ip}"
        return StepResult(changed=created, message=note,
                          data={"new_allocation_id": new_id, "new_public_ip": new_ip, "note": note})

    def estimate_monthly_savings(self, seen: Observation) -> float:
        return round(flat("eip_idle_hourly", self.rec.region) * hours_per_month(), 2)
