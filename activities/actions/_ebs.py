"""EBS volume helpers shared by the volume kinds (not a kind itself)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from activities.actions.base import tags_of
from activities.errors import Refused, client_error_code
from domain.execution import Observation

_MISSING = {"InvalidVolume.NotFound", "InvalidVolumeID.Malformed"}
_NO_MODIFICATION = {"InvalidVolumeModification.NotFound"}

#: Volume types whose IOPS / throughput are provisioned (and so must be restored as they were).
IOPS_TYPES = ("gp3", "io1", "io2")
THROUGHPUT_TYPES = ("gp3",)


def describe_volume(ec2: Any, volume_id: str) -> dict[str, Any] | None:
    """The volume, or None when it does not exist (a "deleted" volume counts as gone)."""
    try:
        volumes = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    except ClientError as exc:
        if client_error_code(exc) in _MISSING:
            return None
        raise
    for volume in volumes:
        if volume["State"] != "deleted":
            return dict(volume)
    return None


def volume_facts(volume: dict[str, Any]) -> dict[str, Any]:
    """JSON-serializable facts about a volume: what drift is checked against and revert needs."""
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


def observe_volume(ec2: Any, volume_id: str) -> Observation:
    volume = describe_volume(ec2, volume_id)
    if volume is None:
        raise Refused(f"volume {volume_id} does not exist")
    return Observation(state=volume_facts(volume), tags=tags_of(volume.get("Tags")))


def latest_modification(ec2: Any, volume_id: str) -> dict[str, Any] | None:
    """The most recent Elastic Volumes modification, with ISO timestamps, or None if never modified."""
    try:
        found = ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"]
    except ClientError as exc:
        if client_error_code(exc) in _NO_MODIFICATION:
            return None
        raise
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


def tag_filters(tags: dict[str, str]) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{key}", "Values": [value]} for key, value in tags.items()]


def find_snapshot(ec2: Any, tags: dict[str, str]) -> dict[str, Any] | None:
    """Our own snapshot carrying all these tags (oldest first), or None."""
    snapshots = ec2.describe_snapshots(OwnerIds=["self"], Filters=tag_filters(tags))["Snapshots"]
    snapshots.sort(key=lambda s: _epoch(s.get("StartTime")))
    return dict(snapshots[0]) if snapshots else None


def find_volume(ec2: Any, tags: dict[str, str]) -> dict[str, Any] | None:
    """A live volume carrying all these tags, or None."""
    volumes = ec2.describe_volumes(Filters=tag_filters(tags))["Volumes"]
    live = [v for v in volumes if v["State"] not in ("deleting", "deleted")]
    return dict(live[0]) if live else None


def volume_shape(facts: dict[str, Any]) -> dict[str, Any]:
    """CreateVolume arguments that recreate a volume like the one `volume_facts` described."""
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


def restorable_tags(tags: dict[str, str]) -> list[dict[str, str]]:
    """Tags that may be set again (the aws: prefix is reserved)."""
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items()) if not k.lower().startswith("aws:")]
