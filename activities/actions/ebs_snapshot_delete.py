"""ebs.snapshot_delete: delete an old EBS snapshot no AMI uses. IRREVERSIBLE: revert cannot restore it."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from pydantic import Field

from activities.actions.base import Action, register
from activities.errors import Refused, RevertImpossible, VerificationFailed, client_error_code
from activities.resources.ebs_snapshot import EbsSnapshot, SnapshotState, describe_snapshot
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel
from domain.pricing import snapshot_monthly

_MISSING = {"InvalidSnapshot.NotFound", "InvalidSnapshotID.Malformed"}  # DeleteSnapshot's "already gone"
#: Tag prefixes of services that manage snapshots on a schedule: deleting behind their back fights them.
_MANAGED = {"aws:dlm:": "Data Lifecycle Manager", "aws:backup:": "AWS Backup"}


class SnapshotDeleteParams(StrictModel):
    expected_volume_size_gib: int | None = Field(default=None, gt=0, description="Refuse on a different size (drift).")
    min_age_days: int = Field(default=90, ge=0, description="Refuse snapshots younger than this.")


@register
class EbsSnapshotDelete(Action[SnapshotDeleteParams, SnapshotState]):
    """Delete an old EBS snapshot that no AMI uses. IRREVERSIBLE: the snapshot's data is gone
    for good; the backup records only its description, size and tags, and revert fails with
    RevertImpossible (the execution then ends ROLLBACK_FAILED).

    Example recommendation::

        {"id": "rec-snapshot-delete-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "ebs.snapshot_delete", "resource_id": "snap-0123456789abcdef0",
         "params": {"expected_volume_size_gib": 500, "min_age_days": 180}, "estimated_monthly_savings": 25.0}
    """

    kind = "ebs.snapshot_delete"
    resource = EbsSnapshot
    params_model = SnapshotDeleteParams
    reversible = False
    destroys_data = True
    base_risk = RiskLevel.HIGH
    permissions = ("ec2:DescribeSnapshots", "ec2:DescribeImages", "ec2:DeleteSnapshot")

    def _snapshot(self) -> dict[str, Any] | None:
        return describe_snapshot(self.aws, self.rec.resource_id)

    def refusal(self, seen: Observation) -> str | None:
        s, expected = self.state(seen), self.params.expected_volume_size_gib
        if expected is not None and s.volume_size != expected:
            return f"drift: snapshot is of a {s.volume_size} GiB volume, the recommendation assumed {expected} GiB"
        if s.owner_id != self.rec.account_id:
            return f"snapshot is owned by account {s.owner_id}, not {self.rec.account_id}"
        if s.state != "completed":
            return f"snapshot is {s.state}, not completed"
        if s.used_by_images:
            return f"snapshot is used by AMI {', '.join(s.used_by_images)}; deregister the AMI first"
        if s.age_days < self.params.min_age_days:
            return f"snapshot is {s.age_days:.0f} days old, younger than min_age_days={self.params.min_age_days}"
        for prefix, service in _MANAGED.items():
            if any(key.startswith(prefix) for key in seen.tags):
                return f"snapshot is managed by {service}; change its policy instead"
        return None

    def plan(self, seen: Observation) -> list[str]:
        s = self.state(seen)
        return [f"record the description, size and tags of {self.rec.resource_id}",
                f"delete {self.rec.resource_id} ({s.volume_size} GiB, {s.age_days:.0f} days old)",
                "IRREVERSIBLE: the snapshot's data cannot be restored; a rollback fails"]

    def check_permissions(self, seen: Observation) -> list[str]:
        return [self.dry_run(self.aws.delete_snapshot, "ec2:DeleteSnapshot", SnapshotId=self.rec.resource_id)]

    def backup(self, seen: Observation) -> BackupRecord:
        """No AWS object: a snapshot cannot be backed up but by another copy of itself."""
        s = self.state(seen)
        data = {"description": s.description, "volume_size": s.volume_size, "volume_id": s.volume_id,
                "start_time": s.start_time, "tags": dict(seen.tags)}
        return BackupRecord(kind=self.kind, resource_id=self.rec.resource_id, data=data)

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        try:
            self.aws.delete_snapshot(SnapshotId=self.rec.resource_id)
        except ClientError as exc:
            code = client_error_code(exc)
            if code in _MISSING:
                return StepResult(changed=False, message=f"snapshot {self.rec.resource_id} already deleted")
            if code == "InvalidSnapshot.InUse":
                raise Refused(f"snapshot is in use since validation: {exc.response['Error'].get('Message')}") from None
            raise
        return StepResult(changed=True, message=f"deleted snapshot {self.rec.resource_id}")

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        snap = self._snapshot()
        if snap is None:
            return StepResult(changed=False, message=f"snapshot {self.rec.resource_id} is gone")
        raise VerificationFailed(f"snapshot {self.rec.resource_id} still exists ({snap['State']})")

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        if self._snapshot() is not None:
            return StepResult(changed=False, message=f"snapshot {self.rec.resource_id} was never deleted")
        raise RevertImpossible("snapshot deletion is not reversible")

    def estimate_monthly_savings(self, seen: Observation) -> float:
        return round(snapshot_monthly(self.rec.region, self.state(seen).volume_size), 2)
