"""Every action kind against moto in-process: the contract (converge, find-or-create, refuse) per kind."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from botocore.exceptions import ClientError
from temporalio.testing import ActivityEnvironment

from activities.actions.base import BACKUP_TAG, action_class
from activities.aws import SessionFactory
from activities.errors import InProgress, Refused
from activities.execution import ExecutionActivities
from activities.faults import FaultInjector
from domain.execution import ActionStepInput, Observation
from tests.kinds_support import build_action, converge, moto_ec2, tag_dict, tag_list

EXEC = "exec-test-1"
MISSING_INSTANCE = "i-0123456789abcdef0"
MISSING_VOLUME = "vol-0123456789abcdef0"

ec2 = moto_ec2  # the shared fixture, under the name these tests use


@pytest.fixture
def factory(ec2: Any) -> SessionFactory:
    return SessionFactory()


action = partial(build_action, execution_id=EXEC)  # action(factory, kind, resource_id, params[, execution_id=])


# ---- resources, as an operator would create them ---------------------------------------

def run_instance(ec2: Any, instance_type: str = "m5.large", state: str = "running",
                 tags: dict[str, str] | None = None) -> str:
    spec: dict[str, Any] = {"ImageId": "ami-12c6146b", "MinCount": 1, "MaxCount": 1, "InstanceType": instance_type}
    if tags:
        spec["TagSpecifications"] = [{"ResourceType": "instance", "Tags": tag_list(tags)}]
    instance_id = str(ec2.run_instances(**spec)["Instances"][0]["InstanceId"])
    if state == "stopped":
        ec2.stop_instances(InstanceIds=[instance_id])
    return instance_id


def create_volume(ec2: Any, **spec: Any) -> str:
    spec = {"AvailabilityZone": "us-east-1b", "Size": 50, "VolumeType": "gp3", "Iops": 4000,
            "Throughput": 200, "TagSpecifications": [{"ResourceType": "volume", "Tags": tag_list(VOLUME_TAGS)}],
            **spec}
    return str(ec2.create_volume(**{k: v for k, v in spec.items() if v is not None})["VolumeId"])


def gp2_volume(ec2: Any) -> str:
    return create_volume(ec2, VolumeType="gp2", Size=200, Iops=None, Throughput=None)


VOLUME_TAGS = {"Name": "scratch", "team": "data"}


def instance(ec2: Any, instance_id: str) -> tuple[str, str]:
    found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return found["InstanceType"], found["State"]["Name"]


def volume(ec2: Any, volume_id: str) -> dict[str, Any]:
    return dict(ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0])


def tagged(ec2: Any, what: str, key: str, value: str) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{key}", "Values": [value]}]
    if what == "snapshots":
        return list(ec2.describe_snapshots(OwnerIds=["self"], Filters=filters)["Snapshots"])
    return list(ec2.describe_volumes(Filters=filters)["Volumes"])


def world(ec2: Any) -> dict[str, Any]:
    """Everything the kinds could change, as describe calls show it."""
    instances = sorted((i["InstanceId"], i["InstanceType"], i["State"]["Name"])
                       for r in ec2.describe_instances()["Reservations"] for i in r["Instances"])
    volumes = sorted((v["VolumeId"], v["VolumeType"], v["Size"], v.get("Iops"), v.get("Throughput"), v["State"],
                      tuple(sorted((t["Key"], t["Value"]) for t in v.get("Tags") or [])))
                     for v in ec2.describe_volumes()["Volumes"])
    snapshots = sorted(s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])
    modifications = len(ec2.describe_volumes_modifications()["VolumesModifications"])
    return {"instances": instances, "volumes": volumes, "snapshots": snapshots, "modifications": modifications}


# ---- the contract, for every kind -------------------------------------------------------

def _retype(ec2: Any, instance_id: str) -> None:
    ec2.stop_instances(InstanceIds=[instance_id])
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "m5.xlarge"})
    ec2.start_instances(InstanceIds=[instance_id])


@dataclass(frozen=True)
class Case:
    kind: str
    create: Callable[[Any], str]
    params: dict[str, Any]
    drift: Callable[[Any, str], object]
    missing_id: str
    labels: list[str]


CASES = [
    Case("ec2.stop", run_instance, {"expected_instance_type": "m5.large"}, _retype, MISSING_INSTANCE,
         ["ec2:StopInstances", "ec2:StartInstances"]),
    Case("ec2.rightsize", run_instance, {"expected_instance_type": "m5.large", "target_instance_type": "t3.large"},
         _retype, MISSING_INSTANCE, ["ec2:StopInstances", "ec2:ModifyInstanceAttribute", "ec2:StartInstances"]),
    Case("ebs.delete", create_volume, {"expected_size_gib": 50, "expected_volume_type": "gp3"},
         lambda ec2, vid: ec2.modify_volume(VolumeId=vid, Size=80), MISSING_VOLUME,
         ["ec2:CreateSnapshot", "ec2:DeleteVolume", "ec2:CreateVolume"]),
    Case("ebs.gp2_to_gp3", gp2_volume, {"expected_volume_type": "gp2"},
         lambda ec2, vid: ec2.modify_volume(VolumeId=vid, VolumeType="gp3"), MISSING_VOLUME,
         ["ec2:ModifyVolume"]),
]
each_kind = pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])


@each_kind
def test_drift_is_refused(case: Case, ec2: Any, factory: SessionFactory) -> None:
    kind = action(factory, case.kind, case.create(ec2), case.params)
    assert kind.refusal(kind.inspect()) is None
    case.drift(ec2, kind.rec.resource_id)
    reason = kind.refusal(kind.inspect())
    assert reason is not None and reason.startswith("drift:")


@each_kind
def test_missing_resource_is_refused(case: Case, factory: SessionFactory) -> None:
    with pytest.raises(Refused, match=case.missing_id):
        action(factory, case.kind, case.missing_id, case.params).inspect()


@each_kind
def test_backup_and_apply_twice_change_once(case: Case, ec2: Any, factory: SessionFactory) -> None:
    kind = action(factory, case.kind, case.create(ec2), case.params)
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    before = world(ec2)
    assert converge(kind.backup, seen) == backup
    assert world(ec2) == before
    assert converge(kind.apply, seen, backup).changed
    applied = world(ec2)
    assert applied != before
    assert not converge(kind.apply, seen, backup).changed
    assert world(ec2) == applied


@each_kind
def test_check_permissions_changes_nothing(case: Case, ec2: Any, factory: SessionFactory) -> None:
    kind = action(factory, case.kind, case.create(ec2), case.params)
    seen = kind.inspect()
    before = world(ec2)
    labels = kind.check_permissions(seen)
    assert labels == case.labels
    assert set(labels) <= set(kind.permissions)
    assert world(ec2) == before


@each_kind
def test_revert_is_idempotent(case: Case, ec2: Any, factory: SessionFactory) -> None:
    kind = action(factory, case.kind, case.create(ec2), case.params)
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    converge(kind.apply, seen, backup)
    converge(kind.verify, seen, backup)
    first = converge(kind.revert, seen, backup)
    after = world(ec2)
    second = converge(kind.revert, seen, backup)
    assert not second.changed
    assert second.data == first.data
    assert world(ec2) == after


# ---- happy paths: change, verify, revert restores the original --------------------------

def test_ec2_stop_happy_path(ec2: Any, factory: SessionFactory) -> None:
    iid = run_instance(ec2)
    kind = action(factory, "ec2.stop", iid, {"expected_instance_type": "m5.large"})
    seen = kind.inspect()
    assert kind.refusal(seen) is None
    backup = converge(kind.backup, seen)
    assert converge(kind.apply, seen, backup).changed
    converge(kind.verify, seen, backup)
    assert instance(ec2, iid) == ("m5.large", "stopped")
    converge(kind.revert, seen, backup)
    assert instance(ec2, iid) == ("m5.large", "running")


@pytest.mark.parametrize("state", ["running", "stopped"])
def test_ec2_rightsize_happy_path(state: str, ec2: Any, factory: SessionFactory) -> None:
    iid = run_instance(ec2, state=state)
    kind = action(factory, "ec2.rightsize", iid, {"expected_instance_type": "m5.large",
                                                  "target_instance_type": "t3.large"})
    seen = kind.inspect()
    assert kind.refusal(seen) is None
    backup = converge(kind.backup, seen)
    assert backup.data == {"instance_type": "m5.large", "was_running": state == "running"}
    assert converge(kind.apply, seen, backup).changed
    converge(kind.verify, seen, backup)
    assert instance(ec2, iid) == ("t3.large", state)
    converge(kind.revert, seen, backup)
    assert instance(ec2, iid) == ("m5.large", state)


def test_ebs_delete_happy_path(ec2: Any, factory: SessionFactory) -> None:
    vid = create_volume(ec2)
    original = volume(ec2, vid)
    kind = action(factory, "ebs.delete", vid, {"expected_size_gib": 50, "expected_volume_type": "gp3"})
    seen = kind.inspect()
    assert kind.refusal(seen) is None
    backup = converge(kind.backup, seen)
    snapshot = ec2.describe_snapshots(SnapshotIds=[backup.backup_id])["Snapshots"][0]
    assert snapshot["VolumeId"] == vid
    assert {BACKUP_TAG: EXEC, "reclaim:resource-id": vid}.items() <= tag_dict(snapshot["Tags"]).items()
    assert converge(kind.apply, seen, backup).changed
    assert converge(kind.verify, seen, backup).message.endswith("is gone")
    assert not ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [vid]}])["Volumes"]

    result = converge(kind.revert, seen, backup)
    restored = volume(ec2, result.data["restored_volume_id"])
    assert result.data["note"] == f"restored as a new volume {restored['VolumeId']} (volume ids cannot be reused)"
    for key in ("VolumeType", "Size", "Iops", "Throughput", "AvailabilityZone", "Encrypted"):
        assert restored[key] == original[key], key
    assert restored["State"] == "available"
    assert restored["SnapshotId"] == backup.backup_id
    assert tag_dict(restored["Tags"]) == {**VOLUME_TAGS, "reclaim:restored-for": EXEC,
                                          "reclaim:restored-from-snapshot": str(backup.backup_id)}

    assert kind.cleanup(backup).changed
    assert not tagged(ec2, "snapshots", BACKUP_TAG, EXEC)
    assert not kind.cleanup(backup).changed


def test_ebs_gp2_to_gp3_happy_path(ec2: Any, factory: SessionFactory) -> None:
    vid = gp2_volume(ec2)
    kind = action(factory, "ebs.gp2_to_gp3", vid, {})
    seen = kind.inspect()
    assert kind.refusal(seen) is None
    backup = converge(kind.backup, seen)
    assert backup.data["volume_type"] == "gp2" and backup.data["size"] == 200
    assert converge(kind.apply, seen, backup).changed
    converge(kind.verify, seen, backup)
    migrated = volume(ec2, vid)
    assert (migrated["VolumeType"], migrated["Iops"], migrated["Throughput"]) == ("gp3", 3000, 250)
    converge(kind.revert, seen, backup)
    reverted = volume(ec2, vid)
    # moto keeps gp3's Iops/Throughput after a change back to gp2 (AWS derives gp2 IOPS from size).
    assert (reverted["VolumeType"], reverted["Size"], reverted["AvailabilityZone"]) == ("gp2", 200, "us-east-1b")
    assert tag_dict(reverted["Tags"]) == VOLUME_TAGS


# ---- ec2.rightsize ---------------------------------------------------------------------

def test_rightsize_params_must_differ(factory: SessionFactory) -> None:
    with pytest.raises(Refused, match="must differ"):
        action(factory, "ec2.rightsize", MISSING_INSTANCE, {"expected_instance_type": "m5.large",
                                                            "target_instance_type": "m5.large"})


def test_rightsize_refuses_auto_scaling_members(ec2: Any, factory: SessionFactory) -> None:
    iid = run_instance(ec2, tags={"aws:autoscaling:groupName": "web"})
    kind = action(factory, "ec2.rightsize", iid, {"expected_instance_type": "m5.large",
                                                  "target_instance_type": "t3.large"})
    assert "Auto Scaling group web" in str(kind.refusal(kind.inspect()))


def test_rightsize_stops_before_changing_the_type(ec2: Any, factory: SessionFactory) -> None:
    iid = run_instance(ec2)
    kind = action(factory, "ec2.rightsize", iid, {"expected_instance_type": "m5.large",
                                                  "target_instance_type": "t3.large"})
    seen = kind.inspect()
    backup = kind.backup(seen)
    with pytest.raises(InProgress, match="stop requested"):
        kind.apply(seen, backup)
    assert instance(ec2, iid) == ("m5.large", "stopped")


def test_rightsize_refuses_an_instance_started_since_validation(ec2: Any, factory: SessionFactory) -> None:
    iid = run_instance(ec2, state="stopped")
    kind = action(factory, "ec2.rightsize", iid, {"expected_instance_type": "m5.large",
                                                  "target_instance_type": "t3.large"})
    seen = kind.inspect()
    backup = kind.backup(seen)
    ec2.start_instances(InstanceIds=[iid])
    with pytest.raises(Refused, match="now running"):
        kind.apply(seen, backup)
    assert instance(ec2, iid) == ("m5.large", "running")


# ---- ebs.delete ------------------------------------------------------------------------

def test_ebs_delete_refuses_an_attached_volume(ec2: Any, factory: SessionFactory) -> None:
    vid, iid = create_volume(ec2, AvailabilityZone="us-east-1a"), run_instance(ec2)
    ec2.attach_volume(VolumeId=vid, InstanceId=iid, Device="/dev/sdf")
    kind = action(factory, "ebs.delete", vid, {})
    assert f"attached to {iid}" in str(kind.refusal(kind.inspect()))


def test_ebs_delete_apply_refuses_a_volume_attached_since_validation(ec2: Any, factory: SessionFactory) -> None:
    vid, iid = create_volume(ec2, AvailabilityZone="us-east-1a"), run_instance(ec2)
    kind = action(factory, "ebs.delete", vid, {})
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    ec2.attach_volume(VolumeId=vid, InstanceId=iid, Device="/dev/sdf")
    with pytest.raises(Refused, match=iid):
        kind.apply(seen, backup)
    assert volume(ec2, vid)["State"] == "in-use"


def test_ebs_delete_backup_is_found_not_recreated(ec2: Any, factory: SessionFactory) -> None:
    vid = create_volume(ec2)
    kind = action(factory, "ebs.delete", vid, {})
    seen = kind.inspect()
    first, second = converge(kind.backup, seen), converge(kind.backup, seen)
    assert first.backup_id == second.backup_id
    assert [s["SnapshotId"] for s in tagged(ec2, "snapshots", BACKUP_TAG, EXEC)] == [first.backup_id]
    other = action(factory, "ebs.delete", vid, {}, execution_id="exec-test-2")
    assert converge(other.backup, seen).backup_id != first.backup_id


def test_ebs_delete_first_backup_attempt_looks_for_nothing_and_a_retry_finds_it(ec2: Any) -> None:
    """The backup's lookup by tag (one DescribeSnapshots over the account's snapshots) only where an
    earlier attempt may have made one: the first attempt creates; attempt 2 finds that one."""
    counter = FaultInjector([])
    sessions = SessionFactory(session_hooks=[counter.install])
    vid = create_volume(ec2)
    kind = action(sessions, "ebs.delete", vid, {})
    step = ActionStepInput(execution_id=EXEC, recommendation=kind.rec, observed=kind.inspect())
    activities = ExecutionActivities(sessions)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, activity_type="backup", attempt=1)
    first = env.run(activities.backup, step)
    assert counter.calls.get("DescribeSnapshots", 0) == 0 and counter.calls["CreateSnapshot"] == 1
    env.info = dataclasses.replace(env.info, attempt=2)  # as if the first had died after its CreateSnapshot
    again = env.run(activities.backup, step)
    assert again.backup_id == first.backup_id and counter.calls["CreateSnapshot"] == 1
    assert counter.calls["DescribeSnapshots"] == 1
    assert [s["SnapshotId"] for s in tagged(ec2, "snapshots", BACKUP_TAG, EXEC)] == [first.backup_id]


def test_ec2_terminate_first_backup_attempt_looks_for_no_ami_and_a_retry_finds_it(ec2: Any) -> None:
    """As ebs.delete's: the AMI is looked for by tag (DescribeImages filtered over the account's
    images) only where an earlier attempt may have made one. Attempt 1 creates and reads its AMI by
    id; attempt 2 finds that AMI by tag and creates none."""
    counter = FaultInjector([])
    sessions = SessionFactory(session_hooks=[counter.install])
    kind = action(sessions, "ec2.terminate", run_instance(ec2), {})
    step = ActionStepInput(execution_id=EXEC, recommendation=kind.rec, observed=kind.inspect())
    activities = ExecutionActivities(sessions)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, activity_type="backup", attempt=1)
    first = env.run(activities.backup, step)
    assert (counter.calls["CreateImage"], counter.calls["DescribeImages"]) == (1, 1)  # by id only
    env.info = dataclasses.replace(env.info, attempt=2)  # as if the first had died after its CreateImage
    again = env.run(activities.backup, step)
    assert again.backup_id == first.backup_id
    assert (counter.calls["CreateImage"], counter.calls["DescribeImages"]) == (1, 2)
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": f"tag:{BACKUP_TAG}", "Values": [EXEC]}])["Images"]
    assert [i["ImageId"] for i in images] == [first.backup_id]


def test_ebs_delete_needs_its_snapshot(ec2: Any, factory: SessionFactory) -> None:
    vid = create_volume(ec2)
    kind = action(factory, "ebs.delete", vid, {})
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    ec2.delete_snapshot(SnapshotId=backup.backup_id)
    with pytest.raises(Refused, match="missing"):
        kind.apply(seen, backup)
    assert volume(ec2, vid)["State"] == "available"


def test_ebs_delete_revert_restores_once(ec2: Any, factory: SessionFactory) -> None:
    vid = create_volume(ec2)
    kind = action(factory, "ebs.delete", vid, {})
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    assert not converge(kind.revert, seen, backup).changed  # nothing deleted yet: nothing to restore
    converge(kind.apply, seen, backup)
    assert converge(kind.revert, seen, backup).changed
    assert not converge(kind.revert, seen, backup).changed
    assert len(tagged(ec2, "volumes", "reclaim:restored-for", EXEC)) == 1


def test_ebs_delete_revert_creates_with_a_token_derived_from_the_execution(ec2: Any) -> None:
    """The tag lookup that finds an earlier restore is eventually consistent: a retried revert
    that misses it sends the same ClientToken, so AWS answers with the first volume."""
    sent: list[dict[str, Any]] = []

    def capture(session: Any) -> None:
        session.events.register("provide-client-params.ec2.CreateVolume",
                                lambda params, **_: sent.append(dict(params)))

    factory = SessionFactory(session_hooks=[capture])
    vid = create_volume(ec2)
    for execution_id in (EXEC, "exec-" + "r" * 80):  # a long id still fits EC2's 64 characters
        kind = action(factory, "ebs.delete", vid, {}, execution_id=execution_id)
        seen = kind.inspect()
        backup = converge(kind.backup, seen)
        kind._restore(backup)
        kind._restore(backup)  # as if the first restore were not yet visible to the lookup
    tokens = [p["ClientToken"] for p in sent]
    assert tokens[0] == tokens[1] == f"{EXEC}-revert"
    assert tokens[2] == tokens[3] and len(tokens[2]) == 64 and tokens[2].endswith("-revert")


# ---- ebs.gp2_to_gp3 --------------------------------------------------------------------

@pytest.mark.parametrize(("size", "iops", "throughput"),
                         [(1, 3000, 125), (170, 3000, 125), (171, 3000, 250), (2000, 6000, 250), (6000, 16000, 250)])
def test_gp3_defaults_do_not_regress(size: int, iops: int, throughput: int) -> None:
    # Through the registry: importing a kind module directly first would leave registry() with one kind.
    module = sys.modules[action_class("ebs.gp2_to_gp3").__module__]
    assert module.default_targets(size) == (iops, throughput)


def test_gp3_refuses_within_six_hours_of_a_modification(ec2: Any, factory: SessionFactory) -> None:
    vid = gp2_volume(ec2)
    kind = action(factory, "ebs.gp2_to_gp3", vid, {})
    assert kind.refusal(kind.inspect()) is None
    ec2.modify_volume(VolumeId=vid, Size=300)
    assert "6 hours" in str(kind.refusal(kind.inspect()))


def _gp2(**state: Any) -> Observation:
    """A whole observation (the state model refuses a partial one) of a 100 GiB gp2 volume."""
    return Observation(state={"state": "available", "volume_type": "gp2", "size": 100, "iops": 300,
                              "throughput": None, "availability_zone": "us-east-1a", "encrypted": False,
                              "kms_key_id": None, "attached_to": [], "modification_state": None,
                              "modification_end_time": None, **state})


@pytest.mark.parametrize(("params", "state", "expected"), [
    ({}, {"modification_state": "optimizing"}, "still optimizing"),
    ({}, {"modification_state": "completed",
          "modification_end_time": (datetime.now(UTC) - timedelta(hours=7)).isoformat()}, None),
    ({}, {"modification_end_time": (datetime.now(UTC) - timedelta(hours=5)).isoformat()}, "6 hours"),
    ({"target_throughput": 1000}, {}, "needs at least 4000 IOPS"),
    ({"target_iops": 16000}, {"size": 20}, "500 IOPS per GiB"),
])
def test_gp3_refusals(params: dict[str, Any], state: dict[str, Any], expected: str | None,
                      factory: SessionFactory) -> None:
    reason = action(factory, "ebs.gp2_to_gp3", MISSING_VOLUME, params).refusal(_gp2(**state))
    assert reason == expected if expected is None else expected in str(reason)


@pytest.mark.parametrize("params", [{"target_iops": 2000}, {"target_throughput": 1001},
                                    {"expected_volume_type": "gp3"}, {"iops": 3000}])
def test_gp3_params_are_validated(params: dict[str, Any], factory: SessionFactory) -> None:
    with pytest.raises(Refused, match="invalid params"):
        action(factory, "ebs.gp2_to_gp3", MISSING_VOLUME, params)


class _Refusing:
    """The real client, except ModifyVolume answers with an AWS error (moto has no 6-hour rule)."""

    def __init__(self, real: Any, code: str) -> None:
        self.real, self.code = real, code

    def modify_volume(self, **_: Any) -> None:
        raise ClientError({"Error": {"Code": self.code, "Message": "not now"}}, "ModifyVolume")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.parametrize(("code", "raises"), [("VolumeModificationRateExceeded", InProgress),
                                               ("IncorrectModificationState", InProgress),
                                               ("InvalidParameterValue", ClientError)])
def test_gp3_revert_waits_for_aws_to_allow_it(code: str, raises: type[Exception], ec2: Any,
                                              factory: SessionFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    vid = gp2_volume(ec2)
    kind = action(factory, "ebs.gp2_to_gp3", vid, {})
    seen = kind.inspect()
    backup = kind.backup(seen)
    kind.apply(seen, backup)
    real = kind.aws
    monkeypatch.setattr(kind, "client", lambda service: _Refusing(real, code))
    with pytest.raises(raises, match=code if raises is ClientError else "does not allow"):
        kind.revert(seen, backup)
    assert volume(ec2, vid)["VolumeType"] == "gp3"
