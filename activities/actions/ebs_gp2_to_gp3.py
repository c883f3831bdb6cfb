"""ebs.gp2_to_gp3: migrate a gp2 volume to gp3 in place (Elastic Volumes); revert migrates it back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import Field

from activities.actions.base import Action, register
from activities.errors import InProgress, VerificationFailed, client_error_code
from activities.resources.ebs_volume import (
    EbsVolumeModification,
    VolumeModificationState,
    describe_volume,
    latest_modification,
)
from domain import pricing
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel

#: AWS allows one modification per volume per 6 hours.
MODIFICATION_COOLDOWN = timedelta(hours=6)
_BUSY = ("modifying", "optimizing")
#: ModifyVolume codes that mean "not yet": retried with backoff, never fatal.
_NOT_YET = frozenset({"VolumeModificationRateExceeded", "IncorrectModificationState"})


class Gp3Params(StrictModel):
    expected_volume_type: Literal["gp2"] = "gp2"
    target_iops: int | None = Field(default=None, ge=3000, le=16000, description="Default: no regression.")
    target_throughput: int | None = Field(default=None, ge=125, le=1000, description="MiB/s.")


def default_targets(size_gib: int) -> tuple[int, int]:
    """gp3 IOPS and throughput that do not regress from gp2 (3 IOPS/GiB, 100..16000; 250 MiB/s > 170 GiB)."""
    baseline = min(max(3 * size_gib, 100), 16000)
    return max(3000, baseline), 250 if size_gib > 170 else 125


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@register
class EbsGp2ToGp3(Action[Gp3Params, VolumeModificationState]):
    """Change a gp2 volume to gp3 in place (no detach, no downtime), keeping at least gp2's
    baseline performance. gp3 is about 20% cheaper per GiB.

    Example recommendation::

        {"id": "rec-gp3-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "ebs.gp2_to_gp3", "resource_id": "vol-0123456789abcdef0",
         "params": {"expected_volume_type": "gp2"}, "estimated_monthly_savings": 10.0}
    """

    kind = "ebs.gp2_to_gp3"
    resource = EbsVolumeModification
    params_model = Gp3Params
    reversible = True
    base_risk = RiskLevel.LOW
    permissions = ("ec2:DescribeVolumes", "ec2:DescribeVolumesModifications", "ec2:ModifyVolume")

    def targets(self, size_gib: int) -> tuple[int, int]:
        iops, throughput = default_targets(size_gib)
        return self.params.target_iops or iops, self.params.target_throughput or throughput

    def refusal(self, seen: Observation) -> str | None:
        s = self.state(seen)
        if s.volume_type != self.params.expected_volume_type:
            return (f"drift: volume type is {s.volume_type}, "
                    f"the recommendation assumed {self.params.expected_volume_type}")
        if s.modification_state in _BUSY:
            return f"a modification of this volume is still {s.modification_state}"
        ended = s.modification_end_time
        if ended and datetime.now(UTC) - _aware(datetime.fromisoformat(ended)) < MODIFICATION_COOLDOWN:
            return (f"the volume was last modified at {ended}; AWS allows one modification "
                    "per volume per 6 hours, try again later")
        iops, throughput = self.targets(s.size)
        if iops > max(3000, 500 * s.size):
            return f"gp3 allows at most 500 IOPS per GiB above 3000; {iops} IOPS is too many for this volume"
        if throughput * 4 > iops:
            return f"gp3 throughput {throughput} MiB/s needs at least {throughput * 4} IOPS (0.25 MiB/s per IOPS)"
        return None

    def plan(self, seen: Observation) -> list[str]:
        iops, throughput = self.targets(self.state(seen).size)
        return [f"modify {self.rec.resource_id} gp2 -> gp3 ({iops} IOPS, {throughput} MiB/s)"]

    def check_permissions(self, seen: Observation) -> list[str]:
        """One label: the revert's call is ModifyVolume too."""
        iops, throughput = self.targets(self.state(seen).size)
        return [self.dry_run(self.aws.modify_volume, "ec2:ModifyVolume", VolumeId=self.rec.resource_id,
                             VolumeType="gp3", Iops=iops, Throughput=throughput)]

    def backup(self, seen: Observation) -> BackupRecord:
        s = self.state(seen)
        data = {"volume_type": s.volume_type, "iops": s.iops, "size": s.size}
        return BackupRecord(kind=self.kind, resource_id=self.rec.resource_id, data=data)

    def _live(self) -> tuple[dict[str, Any], dict[str, Any]]:
        volume = describe_volume(self.aws, self.rec.resource_id)
        if volume is None:
            raise VerificationFailed(f"volume {self.rec.resource_id} disappeared")
        return volume, latest_modification(self.aws, self.rec.resource_id) or {}

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        volume, modification = self._live()
        if volume["VolumeType"] == "gp3":
            return StepResult(changed=False, message="volume is already gp3")
        if modification.get("state") in _BUSY and modification.get("target_volume_type") == "gp3":
            return StepResult(changed=False, message="modification to gp3 already under way")
        iops, throughput = self.targets(volume["Size"])
        self.aws.modify_volume(VolumeId=self.rec.resource_id, VolumeType="gp3", Iops=iops, Throughput=throughput)
        return StepResult(changed=True, message=f"modification to gp3 requested ({iops} IOPS, {throughput} MiB/s)")

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        volume, modification = self._live()
        state = modification.get("state")
        if state == "modifying":
            raise InProgress("volume modification is modifying")
        if volume["VolumeType"] == "gp3" and state in (None, "optimizing", "completed"):
            return StepResult(changed=False, message=f"volume is gp3 ({state or 'no modification record'})")
        raise VerificationFailed(f"volume is {volume['VolumeType']}, modification {state or 'missing'}")

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        """Real AWS enforces the one-modification-per-6-hours rule, so a revert right after apply is
        refused with VolumeModificationRateExceeded (or IncorrectModificationState while the first
        modification is still running): that is InProgress, retried with backoff until AWS allows it.
        """
        volume, modification = self._live()
        original = str(backup.data.get("volume_type") or "gp2")
        if volume["VolumeType"] == original:
            if modification.get("state") == "modifying":
                raise InProgress(f"volume is modifying back to {original}")
            return StepResult(changed=False, message=f"volume is {original}")
        try:
            self.aws.modify_volume(VolumeId=self.rec.resource_id, VolumeType=original)
        except ClientError as exc:
            if client_error_code(exc) in _NOT_YET:
                raise InProgress(f"AWS does not allow the modification yet ({client_error_code(exc)})") from exc
            raise
        raise InProgress(f"modification back to {original} requested")

    def estimate_monthly_savings(self, seen: Observation) -> float:
        size = self.state(seen).size
        iops, throughput = self.targets(size)
        gp2 = pricing.ebs_monthly(self.rec.region, "gp2", size)
        gp3 = pricing.ebs_monthly(self.rec.region, "gp3", size, iops, throughput)
        if gp2 is None or gp3 is None:
            return self.rec.estimated_monthly_savings
        return round(gp2 - gp3, 2)
