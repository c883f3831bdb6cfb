"""ebs.delete: delete an unattached volume after snapshotting it; revert restores it from the snapshot."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from pydantic import Field

from activities.actions.base import BACKUP_TAG, Action, may_have_made_it, register
from activities.errors import InProgress, Refused, RevertImpossible, VerificationFailed, client_error_code
from activities.resources.base import restorable_tags
from activities.resources.ebs_snapshot import describe_snapshot, find_snapshot
from activities.resources.ebs_volume import EbsVolume, VolumeState, describe_volume, find_volume, volume_shape
from domain import pricing
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel

RESTORED_FOR = "reclaim:restored-for"


class DeleteParams(StrictModel):
    expected_size_gib: int | None = Field(default=None, gt=0, description="Refuse on a different size (drift).")
    expected_volume_type: str | None = Field(default=None, description="Refuse on a different type (drift).")


@register
class EbsDelete(Action[DeleteParams, VolumeState]):
    """Delete an unattached (available) EBS volume. A snapshot tagged with the execution id is
    taken first; revert creates a new volume from it (volume ids cannot be reused).

    Example recommendation::

        {"id": "rec-ebs-delete-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "ebs.delete", "resource_id": "vol-0123456789abcdef0",
         "params": {"expected_size_gib": 500, "expected_volume_type": "gp2"},
         "estimated_monthly_savings": 50.0}
    """

    kind = "ebs.delete"
    resource = EbsVolume
    params_model = DeleteParams
    reversible = True
    destroys_data = True
    base_risk = RiskLevel.MEDIUM
    permissions = (
        "ec2:DescribeVolumes",
        "ec2:DescribeSnapshots",
        "ec2:CreateSnapshot",
        "ec2:CreateTags",
        "ec2:DeleteVolume",
        "ec2:CreateVolume",
        "ec2:DeleteSnapshot",
    )

    def refusal(self, seen: Observation) -> str | None:
        s = self.state(seen)
        size, vtype = s.size, s.volume_type
        if self.params.expected_size_gib is not None and size != self.params.expected_size_gib:
            return f"drift: volume is {size} GiB, the recommendation assumed {self.params.expected_size_gib} GiB"
        if self.params.expected_volume_type is not None and vtype != self.params.expected_volume_type:
            return f"drift: volume type is {vtype}, the recommendation assumed {self.params.expected_volume_type}"
        if s.state != "available":
            attached = ", ".join(s.attached_to) or "no instance"
            return f"volume is {s.state} (attached to {attached}), not available"
        return None

    def plan(self, seen: Observation) -> list[str]:
        rid, s = self.rec.resource_id, self.state(seen)
        return [f"snapshot {rid} ({s.size} GiB {s.volume_type})", f"delete {rid}"]

    def check_permissions(self, seen: Observation) -> list[str]:
        """DeleteSnapshot (cleanup) cannot be dry-run before the snapshot exists."""
        rid = self.rec.resource_id
        return [
            self.dry_run(self.aws.create_snapshot, "ec2:CreateSnapshot", VolumeId=rid,
                         TagSpecifications=[{"ResourceType": "snapshot", "Tags": self.backup_tags()}]),
            self.dry_run(self.aws.delete_volume, "ec2:DeleteVolume", VolumeId=rid),
            self.dry_run(self.aws.create_volume, "ec2:CreateVolume", **volume_shape(self.state(seen).model_dump()),
                         TagSpecifications=[{"ResourceType": "volume", "Tags": self._restored_tags(seen.tags, "")}]),
        ]

    def backup(self, seen: Observation) -> BackupRecord:
        mine = {BACKUP_TAG: self.execution_id, "reclaim:resource-id": self.rec.resource_id}
        snapshot = find_snapshot(self.aws, mine) if may_have_made_it() else None
        if snapshot is None:
            snapshot = self.aws.create_snapshot(
                VolumeId=self.rec.resource_id,
                Description=f"Reclaim backup of {self.rec.resource_id} before {self.kind} ({self.execution_id})",
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": self.backup_tags()}],
            )
        sid, state = snapshot["SnapshotId"], snapshot["State"]
        if state == "error":
            self.aws.delete_snapshot(SnapshotId=sid)
            raise InProgress(f"snapshot {sid} failed; deleted it, a retry takes a new one")
        if state != "completed":
            raise InProgress(f"snapshot {sid} is {state} ({snapshot.get('Progress') or '0%'})")
        s = self.state(seen)
        data = {"volume_type": s.volume_type, "size": s.size, "availability_zone": s.availability_zone,
                "iops": s.iops, "throughput": s.throughput, "encrypted": s.encrypted, "kms_key_id": s.kms_key_id,
                "tags": dict(seen.tags)}
        return BackupRecord(kind=self.kind, resource_id=self.rec.resource_id, backup_id=sid, data=data)

    def _snapshot_state(self, snapshot_id: str | None) -> str | None:
        snapshot = describe_snapshot(self.aws, snapshot_id) if snapshot_id else None
        return None if snapshot is None else str(snapshot["State"])

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        volume = describe_volume(self.aws, self.rec.resource_id)
        if volume is None or volume["State"] == "deleting":
            return StepResult(changed=False, message=f"volume {self.rec.resource_id} already deleted")
        if volume["State"] != "available":
            attached = ", ".join(a["InstanceId"] for a in volume.get("Attachments") or [])
            raise Refused(f"volume is {volume['State']} (attached to {attached or 'no instance'}) since validation")
        if self._snapshot_state(backup.backup_id) != "completed":
            raise Refused(f"backup snapshot {backup.backup_id} is missing or incomplete; not deleting")
        try:
            self.aws.delete_volume(VolumeId=self.rec.resource_id)
        except ClientError as exc:
            if client_error_code(exc) == "InvalidVolume.NotFound":
                return StepResult(changed=False, message=f"volume {self.rec.resource_id} already deleted")
            raise
        return StepResult(changed=True, message=f"deleted {self.rec.resource_id}; backup {backup.backup_id}")

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        volume = describe_volume(self.aws, self.rec.resource_id)
        if volume is None:
            return StepResult(changed=False, message=f"volume {self.rec.resource_id} is gone")
        if volume["State"] == "deleting":
            raise InProgress("volume is deleting")
        raise VerificationFailed(f"volume {self.rec.resource_id} still exists ({volume['State']})")

    def _restored_tags(self, tags: dict[str, str], snapshot_id: str) -> list[dict[str, str]]:
        return [*restorable_tags(tags), {"Key": RESTORED_FOR, "Value": self.execution_id},
                {"Key": "reclaim:restored-from-snapshot", "Value": snapshot_id}]

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        original = describe_volume(self.aws, self.rec.resource_id)
        if original is not None and original["State"] == "deleting":
            raise InProgress("original volume is still deleting; will restore once it is gone")
        if original is not None:
            return StepResult(changed=False, message=f"original volume {self.rec.resource_id} still exists")
        restored, created = find_volume(self.aws, {RESTORED_FOR: self.execution_id}), False
        if restored is None:
            restored, created = self._restore(backup), True
        vid, state = restored["VolumeId"], restored["State"]
        if state == "error":
            raise RevertImpossible(f"restored volume {vid} is in error state")
        if state != "available":
            raise InProgress(f"restored volume {vid} is {state}")
        note = f"restored as a new volume {vid} (volume ids cannot be reused)"
        return StepResult(changed=created, message=note, data={"restored_volume_id": vid, "note": note})

    def _restore(self, backup: BackupRecord) -> dict[str, Any]:
        if self._snapshot_state(backup.backup_id) != "completed":
            raise RevertImpossible(f"backup snapshot {backup.backup_id} is missing or incomplete")
        data, sid = backup.data, str(backup.backup_id)
        kwargs = {"SnapshotId": sid, **volume_shape(data)}
        tags = self._restored_tags(data.get("tags") or {}, sid)
        return dict(self.aws.create_volume(TagSpecifications=[{"ResourceType": "volume", "Tags": tags}],
                                           ClientToken=self.client_token("revert"), **kwargs))

    def cleanup(self, backup: BackupRecord) -> StepResult:
        if not backup.backup_id:
            return StepResult(changed=False, message="no snapshot to clean up")
        try:
            self.aws.delete_snapshot(SnapshotId=backup.backup_id)
        except ClientError as exc:
            if client_error_code(exc) == "InvalidSnapshot.NotFound":
                return StepResult(changed=False, message=f"snapshot {backup.backup_id} already gone")
            raise
        return StepResult(changed=True, message=f"deleted snapshot {backup.backup_id}")

    def estimate_monthly_savings(self, seen: Observation) -> float:
        """The volume's storage, less the snapshot kept for the rollback window."""
        s = self.state(seen)
        volume = pricing.ebs_monthly(self.rec.region, s.volume_type, s.size, s.iops or 0, s.throughput or 0)
        if volume is None:
            return self.rec.estimated_monthly_savings
        return round(volume - pricing.snapshot_monthly(self.rec.region, s.size), 2)
