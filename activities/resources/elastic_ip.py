"""Elastic IP addresses (AWS::EC2::EIP), named by their allocation id."""

from __future__ import annotations

from typing import Any

from activities.resources.base import HEX_ID, Clients, Resource, ResourceState, tags_of, unless_missing

MISSING = frozenset({"InvalidAllocationID.NotFound", "InvalidAllocationID.Malformed"})


class AddressState(ResourceState):
    """What eip.release refuses on (an association) and a stand-in allocation needs."""

    public_ip: str
    domain: str
    associated_with: str | None
    network_border_group: str | None
    public_ipv4_pool: str | None


def describe_address(ec2: Any, allocation_id: str) -> dict[str, Any] | None:
    found = (unless_missing(MISSING, ec2.describe_addresses, AllocationIds=[allocation_id]) or {}).get("Addresses")
    return dict(found[0]) if found else None


def association(address: dict[str, Any]) -> str | None:
    """What the address is associated with, or None (moto reports '' for none)."""
    if not (address.get("AssociationId") or address.get("InstanceId") or address.get("NetworkInterfaceId")):
        return None
    parts = [p for p in (address.get("InstanceId"), address.get("NetworkInterfaceId")) if p]
    return " / ".join(parts) or str(address["AssociationId"])


class ElasticIp(Resource[AddressState]):
    service = "ec2"
    cfn_type = "AWS::EC2::EIP"
    id_pattern = f"eipalloc-{HEX_ID}"
    state_model = AddressState
    missing = "Elastic IP {id} does not exist"

    @classmethod
    def describe(cls, clients: Clients, resource_id: str) -> tuple[AddressState, dict[str, str]] | None:
        address = describe_address(clients(cls.service), resource_id)
        if address is None:
            return None
        return AddressState(
            public_ip=address["PublicIp"], domain=address.get("Domain", "vpc"),
            associated_with=association(address), network_border_group=address.get("NetworkBorderGroup"),
            public_ipv4_pool=address.get("PublicIpv4Pool"),
        ), tags_of(address.get("Tags"))
