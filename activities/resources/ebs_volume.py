"""EBS volumes (AWS::EC2::Volume): the volume kinds' view of one, its modifications, and how to
create one like it (a restore)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from activities.resources.base import (
    HEX_ID,
    Clients,
    Resource,
    ResourceState,
    S,
    tag_filters,
    tags_of,
    unless_missing,
)

_MISSING = frozenset({"InvalidVolume.NotFound", "InvalidVolumeID.Malformed"})
_NO_MODIFICATION = frozenset({"InvalidVolumeModification.NotFound"})

#: Volume types whose IOPS / throughput are provisioned (and so must be restored as they were).
IOPS_TYPES = ("gp3", "io1", "io2")
THROUGHPUT_TYPES = ("gp3",)


class VolumeState(ResourceState):
    """What drift is checked against and a restore needs."""

    state: str
    volume_type: str
    size: int
    iops: int | None
    throughput: int | None
    availability_zone: str
    encrypted: bool
    kms_key_id: str | None
    attached_to: list[str]


class VolumeModificationState(VolumeState):
    """A volume and its latest Elastic Volumes modification (AWS allows one per 6 hours)."""

    modification_state: str | None
    modification_end_time: str | None


def describe_volume(ec2: Any, volume_id: str) -> dict[str, Any] | None:
    """The volume, or None when it does not exist (a "deleted" volume counts as gone)."""
    answer = unless_missing(_MISSING, ec2.describe_volumes, VolumeIds=[volume_id]) or {}
    for volume in answer.get("Volumes", []):
        if volume["State"] != "deleted":
            return dict(volume)
    return None


def volume_facts(volume: dict[str, Any]) -> dict[str, Any]:
    return {
        "state": volume["State"],
        "volume_type": volume["VolumeType"],
        "size": volume["Size"],
        "iops": volume.get("Iops"),
        "throughput": volume.get("Throughput"),
        "availability_zone": volume["AvailabilityZone"],
        "encrypted": bool(volume.get("Encrypted", False)),
        "kms_key_id": volume.get("KmsKeyId"),
        "attached_to": [a["InstanceId"] for a in volume.get("Attachments") or []],
    }


def latest_modification(ec2: Any, volume_id: str) -> dict[str, Any] | None:
    """The most recent Elastic Volumes modification, with ISO timestamps, or None if never modified."""
    answer = unless_missing(_NO_MODIFICATION, ec2.describe_volumes_modifications, VolumeIds=[volume_id]) or {}
    found = answer.get("VolumesModifications")
    if not found:
        return None
    latest = max(found, key=lambda m: _epoch(m.get("StartTime")))
    return {
        "state": latest.get("ModificationState"),
        "target_volume_type": latest.get("TargetVolumeType"),
        "start_time": _iso(latest.get("StartTime")),
        "end_time": _iso(latest.get("EndTime")),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _epoch(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


class _Volumes(Resource[S]):
    service = "ec2"
    cfn_type = "AWS::EC2::Volume"
    id_pattern = f"vol-{HEX_ID}"
    missing = "volume {id} does not exist"


class EbsVolume(_Volumes[VolumeState]):
    state_model = VolumeState

    @classmethod
    def describe(cls, clients: Clients, resource_id: str) -> tuple[VolumeState, dict[str, str]] | None:
        volume = describe_volume(clients(cls.service), resource_id)
        if volume is None:
            return None
        return VolumeState(**volume_facts(volume)), tags_of(volume.get("Tags"))


class EbsVolumeModification(_Volumes[VolumeModificationState]):
    """The volume seen with its latest modification (one more call)."""

    state_model = VolumeModificationState

    @classmethod
    def describe(cls, clients: Clients, resource_id: str) -> tuple[VolumeModificationState, dict[str, str]] | None:
        ec2 = clients(cls.service)
        volume = describe_volume(ec2, resource_id)
        if volume is None:
            return None
        modification = latest_modification(ec2, resource_id) or {}
        state = VolumeModificationState(**volume_facts(volume), modification_state=modification.get("state"),
                                        modification_end_time=modification.get("end_time"))
        return state, tags_of(volume.get("Tags"))


def find_volume(ec2: Any, tags: dict[str, str]) -> dict[str, Any] | None:
    """A live volume carrying all these tags (a restore, found again by its tag), or None."""
    volumes = ec2.describe_volumes(Filters=tag_filters(tags))["Volumes"]
    live = [v for v in volumes if v["State"] not in ("deleting", "deleted")]
    return dict(live[0]) if live else None


def volume_shape(facts: dict[str, Any]) -> dict[str, Any]:
    """CreateVolume arguments that recreate a volume like the one described (a `VolumeState`'s
    JSON, or the part of it a backup kept)."""
    shape: dict[str, Any] = {"AvailabilityZone": facts["availability_zone"], "Size": facts["size"],
                             "VolumeType": facts["volume_type"]}
    if facts["volume_type"] in IOPS_TYPES and facts.get("iops"):
        shape["Iops"] = facts["iops"]
    if facts["volume_type"] in THROUGHPUT_TYPES and facts.get("throughput"):
        shape["Throughput"] = facts["throughput"]
    if facts.get("encrypted"):
        shape["Encrypted"] = True
        if facts.get("kms_key_id"):
            shape["KmsKeyId"] = facts["kms_key_id"]
    return shape
