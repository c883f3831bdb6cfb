"""EBS snapshots (AWS::EC2::Snapshot): the snapshot kind's view of one, and the lookups the
volume kinds make for their backup snapshots."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from activities.resources.base import (
    HEX_ID,
    Clients,
    Resource,
    ResourceState,
    tag_filters,
    tags_of,
    unless_missing,
)

_MISSING = frozenset({"InvalidSnapshot.NotFound", "InvalidSnapshotID.Malformed"})


class SnapshotState(ResourceState):
    """What ebs.snapshot_delete refuses on (age, owner, AMIs using it) and records."""

    state: str
    volume_size: int
    volume_id: str | None
    description: str
    owner_id: str | None
    start_time: str
    age_days: float
    used_by_images: list[str]


def describe_snapshot(ec2: Any, snapshot_id: str) -> dict[str, Any] | None:
    """The snapshot, or None when it does not exist."""
    found = (unless_missing(_MISSING, ec2.describe_snapshots, SnapshotIds=[snapshot_id]) or {}).get("Snapshots")
    return dict(found[0]) if found else None


def images_using(ec2: Any, snapshot_id: str) -> list[str]:
    """Own AMIs whose block devices come from this snapshot, scanned client-side: moto does
    not implement the `block-device-mapping.snapshot-id` filter of DescribeImages."""
    images = ec2.describe_images(Owners=["self"])["Images"]
    return sorted(
        f"{i['ImageId']} ({i.get('Name') or 'unnamed'})" for i in images
        if any((b.get("Ebs") or {}).get("SnapshotId") == snapshot_id for b in i.get("BlockDeviceMappings") or [])
    )


class EbsSnapshot(Resource[SnapshotState]):
    service = "ec2"
    cfn_type = "AWS::EC2::Snapshot"
    id_pattern = f"snap-{HEX_ID}"
    state_model = SnapshotState
    missing = "snapshot {id} does not exist"

    @classmethod
    def describe(cls, clients: Clients, resource_id: str) -> tuple[SnapshotState, dict[str, str]] | None:
        ec2 = clients(cls.service)
        snap = describe_snapshot(ec2, resource_id)
        if snap is None:
            return None
        started: datetime = snap["StartTime"]
        return SnapshotState(
            state=snap["State"], volume_size=snap["VolumeSize"], volume_id=snap.get("VolumeId"),
            description=snap.get("Description", ""), owner_id=snap.get("OwnerId"),
            start_time=started.isoformat(), age_days=(datetime.now(UTC) - started).total_seconds() / 86400,
            used_by_images=images_using(ec2, resource_id),
        ), tags_of(snap.get("Tags"))


def find_snapshot(ec2: Any, tags: dict[str, str]) -> dict[str, Any] | None:
    """Our own snapshot carrying all these tags (a backup, found again by its tag; oldest first), or None."""
    snapshots = ec2.describe_snapshots(OwnerIds=["self"], Filters=tag_filters(tags))["Snapshots"]
    snapshots.sort(key=lambda s: s["StartTime"].timestamp() if s.get("StartTime") else 0.0)
    return dict(snapshots[0]) if snapshots else None
