"""ec2.terminate, ebs.snapshot_delete and eip.release against moto in-process.

Where moto differs from AWS (and the kinds work around it or the test cannot cover it):
- CreateImage with a `snapshot` TagSpecification raises NotImplementedError: the kind tags
  the AMI's snapshots with CreateTags once the AMI is available;
- DescribeImages has no `block-device-mapping.snapshot-id` filter: snapshot usage is scanned;
- RunInstances ignores ClientToken: revert's idempotency is proven by its find-by-tag alone;
- ReleaseAddress releases an associated address (AWS: InvalidIPAddress.InUse): apply re-checks;
- an AMI's block device is a synthetic 15 GiB snapshot, not the instance's volumes;
- snapshots cannot be backdated, so min_age_days is 0 wherever a deletion must go ahead.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import boto3
import pytest

from activities.actions.base import BACKUP_TAG
from activities.aws import SessionFactory
from activities.errors import Refused, RevertImpossible
from domain.pricing import ec2_monthly, flat, hours_per_month, snapshot_monthly
from tests.kinds_support import REGION, build_action, converge, moto_ec2, tag_dict, tag_list

EXEC = "exec-test-more"
INSTANCE_TAGS = {"Name": "web-1", "team": "platform"}
EIP_TAGS = {"Name": "egress", "team": "net"}

ec2 = moto_ec2  # the shared fixture, under the name these tests use


@pytest.fixture
def factory(ec2: Any) -> SessionFactory:
    return SessionFactory()


# action(factory, kind, resource_id[, params][, execution_id=]): params default to {}
action = partial(build_action, execution_id=EXEC, rec_id="rec-more-1")


def world(ec2: Any) -> dict[str, Any]:
    """Everything these kinds could change, as describe calls show it."""
    return {
        "instances": sorted((i["InstanceId"], i["InstanceType"], i["State"]["Name"])
                            for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]),
        "images": sorted(i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]),
        "snapshots": sorted(s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]),
        "addresses": sorted((a["AllocationId"], a["PublicIp"]) for a in ec2.describe_addresses()["Addresses"]),
    }


def tagged_instances(ec2: Any, key: str, value: str) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{key}", "Values": [value]}]
    return [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]


def backup_images(ec2: Any) -> list[dict[str, Any]]:
    return list(ec2.describe_images(Owners=["self"], Filters=[{"Name": f"tag:{BACKUP_TAG}", "Values": [EXEC]}])["Images"])


# ---- ec2.terminate -----------------------------------------------------------------------

def launch(ec2: Any, tags: dict[str, str] | None = None, instance_type: str = "m5.large") -> dict[str, Any]:
    """An instance with everything the restore recipe carries: subnet, SGs, key, profile, tags."""
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
    groups = [ec2.create_security_group(GroupName=f"sg-{n}", Description="x", VpcId=vpc)["GroupId"] for n in "ab"]
    ec2.create_key_pair(KeyName="ops")
    iam = boto3.client("iam", region_name=REGION)
    iam.create_role(RoleName="web", AssumeRolePolicyDocument="{}")
    profile = iam.create_instance_profile(InstanceProfileName="web")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="web", RoleName="web")
    instance = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType=instance_type, SubnetId=subnet,
        SecurityGroupIds=groups, KeyName="ops", IamInstanceProfile={"Arn": profile},
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list(tags or INSTANCE_TAGS)}],
    )["Instances"][0]
    return {"id": instance["InstanceId"], "subnet": subnet, "groups": groups, "profile": profile}


def describe(ec2: Any, instance_id: str) -> dict[str, Any]:
    return dict(ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0])


def test_terminate_happy_path_and_revert(ec2: Any, factory: SessionFactory) -> None:
    made = launch(ec2)
    kind = action(factory, "ec2.terminate", made["id"], {"expected_instance_type": "m5.large"})
    seen = kind.inspect()
    assert kind.refusal(seen) is None
    backup = converge(kind.backup, seen)
    [image] = backup_images(ec2)
    assert image["ImageId"] == backup.backup_id
    recipe = tag_dict(image.get("Tags"))
    assert recipe["reclaim:recipe:instance-type"] == "m5.large"
    assert recipe["reclaim:recipe:subnet-id"] == made["subnet"]
    assert recipe["reclaim:recipe:security-group-ids"] == ",".join(made["groups"])
    assert recipe["reclaim:recipe:key-name"] == "ops"
    assert recipe["reclaim:recipe:iam-instance-profile-arn"] == made["profile"]
    assert json.loads(recipe["reclaim:recipe:tags"]) == INSTANCE_TAGS
    snapshots = ec2.describe_snapshots(SnapshotIds=backup.data["snapshot_ids"])["Snapshots"]
    assert snapshots and all(tag_dict(s.get("Tags"))[BACKUP_TAG] == EXEC for s in snapshots)
    json.dumps(backup.data)  # JSON-serialisable

    assert converge(kind.apply, seen, backup).changed
    assert converge(kind.verify, seen, backup).message.endswith("is terminated")
    assert describe(ec2, made["id"])["State"]["Name"] == "terminated"

    result = converge(kind.revert, seen, backup)
    new = describe(ec2, result.data["replacement_instance_id"])
    assert new["InstanceId"] != made["id"] and new["State"]["Name"] == "running"
    assert new["ImageId"] == backup.backup_id
    assert (new["InstanceType"], new["SubnetId"], new["KeyName"]) == ("m5.large", made["subnet"], "ops")
    assert sorted(g["GroupId"] for g in new["SecurityGroups"]) == sorted(made["groups"])
    assert new["IamInstanceProfile"]["Arn"] == made["profile"]
    assert tag_dict(new.get("Tags")) == {**INSTANCE_TAGS, "reclaim:restored-for": EXEC,
                                         "reclaim:restored-from-image": str(backup.backup_id)}
    assert result.data["note"] == (f"restored as a new instance {new['InstanceId']} from AMI "
                                   f"{backup.backup_id}; its id and IPs differ")

    assert kind.cleanup(backup).changed
    assert not backup_images(ec2)
    assert not ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": backup.data["snapshot_ids"]}])[
        "Snapshots"]
    assert not kind.cleanup(backup).changed


def test_terminate_drift_missing_and_protection_are_refused(ec2: Any, factory: SessionFactory) -> None:
    with pytest.raises(Refused, match="i-0123456789abcdef0"):
        action(factory, "ec2.terminate", "i-0123456789abcdef0").inspect()
    iid = launch(ec2)["id"]
    kind = action(factory, "ec2.terminate", iid, {"expected_instance_type": "m5.large"})
    assert kind.refusal(kind.inspect()) is None
    ec2.stop_instances(InstanceIds=[iid])
    ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "m5.xlarge"})
    assert str(kind.refusal(kind.inspect())).startswith("drift: instance type is m5.xlarge")
    ec2.modify_instance_attribute(InstanceId=iid, DisableApiTermination={"Value": True})
    kind = action(factory, "ec2.terminate", iid)
    assert "termination protection" in str(kind.refusal(kind.inspect()))


def test_terminate_refuses_auto_scaling_members(ec2: Any, factory: SessionFactory) -> None:
    iid = launch(ec2, tags={"aws:autoscaling:groupName": "web"})["id"]
    kind = action(factory, "ec2.terminate", iid)
    assert "Auto Scaling group web" in str(kind.refusal(kind.inspect()))


def test_terminate_backup_and_apply_twice_change_once(ec2: Any, factory: SessionFactory) -> None:
    iid = launch(ec2)["id"]
    kind = action(factory, "ec2.terminate", iid)
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    before = world(ec2)
    assert converge(kind.backup, seen) == backup
    assert world(ec2) == before and len(backup_images(ec2)) == 1
    assert converge(kind.apply, seen, backup).changed
    applied = world(ec2)
    assert not converge(kind.apply, seen, backup).changed
    assert world(ec2) == applied


def test_terminate_apply_refuses_protection_enabled_since_validation(ec2: Any, factory: SessionFactory) -> None:
    iid = launch(ec2)["id"]
    kind = action(factory, "ec2.terminate", iid)
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    ec2.modify_instance_attribute(InstanceId=iid, DisableApiTermination={"Value": True})
    with pytest.raises(Refused, match="termination protection"):
        kind.apply(seen, backup)
    assert describe(ec2, iid)["State"]["Name"] == "running"


def test_terminate_revert_twice_launches_one_replacement(ec2: Any, factory: SessionFactory) -> None:
    iid = launch(ec2)["id"]
    kind = action(factory, "ec2.terminate", iid)
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    assert not converge(kind.revert, seen, backup).changed  # not terminated yet: nothing to restore
    converge(kind.apply, seen, backup)
    first = converge(kind.revert, seen, backup)
    after = world(ec2)
    second = converge(kind.revert, seen, backup)
    assert not second.changed and second.data == first.data
    assert world(ec2) == after
    assert len(tagged_instances(ec2, "reclaim:restored-for", EXEC)) == 1


def test_terminate_check_permissions_changes_nothing(ec2: Any, factory: SessionFactory) -> None:
    kind = action(factory, "ec2.terminate", launch(ec2)["id"])
    seen = kind.inspect()
    before = world(ec2)
    assert kind.check_permissions(seen) == ["ec2:CreateImage", "ec2:TerminateInstances", "ec2:RunInstances"]
    assert kind.unverified_permissions() == ["ec2:DeregisterImage", "ec2:DeleteSnapshot"]
    assert set(kind.check_permissions(seen) + kind.unverified_permissions()) <= set(kind.permissions)
    assert world(ec2) == before


def test_terminate_keeps_long_tags_in_the_backup_record(ec2: Any, factory: SessionFactory) -> None:
    tags = {f"k{n}": "v" * 60 for n in range(6)}
    kind = action(factory, "ec2.terminate", launch(ec2, tags=tags)["id"])
    backup = converge(kind.backup, kind.inspect())
    assert "reclaim:recipe:tags" not in tag_dict(backup_images(ec2)[0].get("Tags"))
    assert backup.data["recipe"]["tags"] == tags and backup.data["tags_in_ami_tags"] is False


def test_terminate_traits_and_savings(ec2: Any, factory: SessionFactory) -> None:
    kind = action(factory, "ec2.terminate", launch(ec2)["id"])
    traits = kind.traits()
    assert (traits.reversible, traits.destroys_data, traits.base_risk.name) == (True, True, "HIGH")
    assert kind.estimate_monthly_savings(kind.inspect()) == round(ec2_monthly(REGION, "m5.large") or 0, 2)


# ---- ebs.snapshot_delete ------------------------------------------------------------------

def snapshot(ec2: Any, size: int = 40) -> str:
    vid = ec2.create_volume(AvailabilityZone="us-east-1a", Size=size)["VolumeId"]
    return str(ec2.create_snapshot(VolumeId=vid, Description="nightly", TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": tag_list({"Name": "old"})}])["SnapshotId"])


def test_snapshot_delete_happy_path_is_irreversible(ec2: Any, factory: SessionFactory) -> None:
    sid = snapshot(ec2)
    kind = action(factory, "ebs.snapshot_delete", sid, {"expected_volume_size_gib": 40, "min_age_days": 0})
    seen = kind.inspect()
    assert kind.refusal(seen) is None
    assert any("IRREVERSIBLE" in step for step in kind.plan(seen))
    assert "IRREVERSIBLE" in str(type(kind).__doc__)
    before = world(ec2)
    backup = converge(kind.backup, seen)
    assert world(ec2) == before  # no AWS object
    assert backup.data["description"] == "nightly" and backup.data["volume_size"] == 40
    assert backup.data["tags"] == {"Name": "old"}
    assert not converge(kind.revert, seen, backup).changed  # never deleted: nothing to undo
    assert converge(kind.apply, seen, backup).changed
    assert not converge(kind.apply, seen, backup).changed
    assert converge(kind.verify, seen, backup).message.endswith("is gone")
    assert sid not in world(ec2)["snapshots"]
    with pytest.raises(RevertImpossible, match="not reversible"):
        kind.revert(seen, backup)
    assert kind.traits().reversible is False and kind.traits().destroys_data is True
    assert kind.estimate_monthly_savings(seen) == round(snapshot_monthly(REGION, 40), 2)


def test_snapshot_delete_refusals(ec2: Any, factory: SessionFactory) -> None:
    with pytest.raises(Refused, match="snap-0123456789abcdef0"):
        action(factory, "ebs.snapshot_delete", "snap-0123456789abcdef0").inspect()
    sid = snapshot(ec2)
    seen = action(factory, "ebs.snapshot_delete", sid).inspect()
    assert "younger than min_age_days=90" in str(action(factory, "ebs.snapshot_delete", sid).refusal(seen))
    drifted = action(factory, "ebs.snapshot_delete", sid, {"expected_volume_size_gib": 80, "min_age_days": 0})
    assert str(drifted.refusal(seen)).startswith("drift:")


def test_snapshot_delete_refuses_a_snapshot_an_ami_uses(ec2: Any, factory: SessionFactory) -> None:
    iid = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ami = ec2.create_image(InstanceId=iid, Name="golden-image")["ImageId"]
    sid = ec2.describe_images(ImageIds=[ami])["Images"][0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    kind = action(factory, "ebs.snapshot_delete", sid, {"min_age_days": 0})
    assert f"used by AMI {ami} (golden-image)" in str(kind.refusal(kind.inspect()))


def test_snapshot_delete_check_permissions_changes_nothing(ec2: Any, factory: SessionFactory) -> None:
    kind = action(factory, "ebs.snapshot_delete", snapshot(ec2), {"min_age_days": 0})
    before = world(ec2)
    assert kind.check_permissions(kind.inspect()) == ["ec2:DeleteSnapshot"]
    assert kind.unverified_permissions() == []
    assert world(ec2) == before


# ---- eip.release --------------------------------------------------------------------------

def allocate(ec2: Any) -> tuple[str, str]:
    address = ec2.allocate_address(Domain="vpc", TagSpecifications=[
        {"ResourceType": "elastic-ip", "Tags": tag_list(EIP_TAGS)}])
    return str(address["AllocationId"]), str(address["PublicIp"])


def test_eip_release_happy_path_and_revert(ec2: Any, factory: SessionFactory) -> None:
    alloc, ip = allocate(ec2)
    kind = action(factory, "eip.release", alloc, {"expected_public_ip": ip})
    seen = kind.inspect()
    assert kind.refusal(seen) is None
    backup = converge(kind.backup, seen)
    assert (backup.data["public_ip"], backup.data["domain"], backup.data["tags"]) == (ip, "vpc", EIP_TAGS)
    assert converge(kind.apply, seen, backup).changed
    assert not converge(kind.apply, seen, backup).changed
    converge(kind.verify, seen, backup)
    assert alloc not in {a for a, _ in world(ec2)["addresses"]}

    result = converge(kind.revert, seen, backup)
    new = ec2.describe_addresses(AllocationIds=[result.data["new_allocation_id"]])["Addresses"][0]
    assert (new["PublicIp"], new["Domain"]) == (result.data["new_public_ip"], "vpc")
    assert tag_dict(new.get("Tags")) == {**EIP_TAGS, "reclaim:restored-for": EXEC,
                                         "reclaim:restored-from": f"{alloc} {ip}"}
    assert result.data["note"] == f"a new address was allocated: the public IP changed from {ip} to {new['PublicIp']}"
    after = world(ec2)
    second = converge(kind.revert, seen, backup)
    assert not second.changed and second.data == result.data and world(ec2) == after


def test_eip_release_refusals(ec2: Any, factory: SessionFactory) -> None:
    with pytest.raises(Refused, match="eipalloc-0123456789abcdef0"):
        action(factory, "eip.release", "eipalloc-0123456789abcdef0").inspect()
    alloc, _ = allocate(ec2)
    kind = action(factory, "eip.release", alloc, {"expected_public_ip": "203.0.113.10"})
    assert str(kind.refusal(kind.inspect())).startswith("drift: public IP")
    iid = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.associate_address(AllocationId=alloc, InstanceId=iid)
    kind = action(factory, "eip.release", alloc)
    assert f"associated with {iid}" in str(kind.refusal(kind.inspect()))


def test_eip_release_apply_refuses_an_address_associated_since_validation(ec2: Any, factory: SessionFactory) -> None:
    alloc, _ = allocate(ec2)
    kind = action(factory, "eip.release", alloc)
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    iid = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.associate_address(AllocationId=alloc, InstanceId=iid)
    with pytest.raises(Refused, match=iid):
        kind.apply(seen, backup)
    assert ec2.describe_addresses(AllocationIds=[alloc])["Addresses"]


def test_eip_release_check_permissions_changes_nothing(ec2: Any, factory: SessionFactory) -> None:
    kind = action(factory, "eip.release", allocate(ec2)[0])
    seen = kind.inspect()
    before = world(ec2)
    assert kind.check_permissions(seen) == ["ec2:ReleaseAddress", "ec2:AllocateAddress"]
    assert world(ec2) == before
    assert kind.traits().base_risk.name == "MEDIUM" and kind.traits().reversible is True
    assert kind.estimate_monthly_savings(seen) == round(flat("eip_idle_hourly", REGION) * hours_per_month(), 2)


def test_terminate_revert_launches_with_a_token_derived_from_the_execution(ec2: Any) -> None:
    """The find-by-tag lookup is eventually consistent on AWS: a retried revert that misses the first
    replacement sends the same ClientToken, so AWS answers with it instead of launching a second
    (moto ignores the token, so the test checks what is sent)."""
    sent: list[dict[str, Any]] = []

    def capture(session: Any) -> None:
        session.events.register("provide-client-params.ec2.RunInstances",
                                lambda params, **_: sent.append(dict(params)))

    iid = launch(ec2)["id"]
    kind = action(SessionFactory(session_hooks=[capture]), "ec2.terminate", iid)
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    converge(kind.apply, seen, backup)
    converge(kind.revert, seen, backup)
    assert [p.get("ClientToken") for p in sent] == [f"{EXEC}-revert"]
