"""asg.rightsize and dynamodb.billing_mode against moto in-process: converge, find-or-create, refuse, revert."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from activities.actions.base import Action
from activities.aws import SessionFactory
from activities.errors import Refused, RevertImpossible
from activities.faults import FaultInjector, FaultRule
from domain.execution import Observation
from domain.pricing import ec2_monthly, hours_per_month, section
from tests.kinds_support import REGION, build_action, converge, moto_account

EXEC = "exec-test-1"
GROUP, TABLE = "web-asg", "orders"


class Aws:
    def __init__(self) -> None:
        self.ec2 = boto3.client("ec2", region_name=REGION)
        self.asg = boto3.client("autoscaling", region_name=REGION)
        self.ddb = boto3.client("dynamodb", region_name=REGION)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    with moto_account(monkeypatch):
        yield Aws()


def action(kind: str, resource_id: str, params: dict[str, Any], sessions: SessionFactory | None = None,
           savings: float = 10.0) -> Action[Any]:
    """build_action on a fresh SessionFactory, unless the test brings one (with fault hooks)."""
    return build_action(sessions or SessionFactory(), kind, resource_id, params,
                        execution_id=EXEC, savings=savings)


# ---- asg.rightsize -----------------------------------------------------------------------

CAPACITY = {"expected_desired": 4, "target_desired": 2, "target_min": 1}
RETYPE = {"expected_instance_type": "m5.large", "target_instance_type": "t3.large"}


def make_group(aws: Aws, version: str | None = "$Default", desired: int = 4) -> str:
    template = aws.ec2.create_launch_template(
        LaunchTemplateName="web-lt", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "m5.large"},
    )["LaunchTemplate"]["LaunchTemplateId"]
    subnet = aws.ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]
    spec = {"LaunchTemplateId": template, **({"Version": version} if version else {})}
    aws.asg.create_auto_scaling_group(
        AutoScalingGroupName=GROUP, LaunchTemplate=spec, MinSize=2, MaxSize=6, DesiredCapacity=desired,
        VPCZoneIdentifier=subnet["SubnetId"],
        Tags=[{"Key": "team", "Value": "web", "PropagateAtLaunch": True, "ResourceId": GROUP,
               "ResourceType": "auto-scaling-group"}])
    return str(template)


def group(aws: Aws) -> dict[str, Any]:
    g = aws.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    return {"min": g["MinSize"], "max": g["MaxSize"], "desired": g["DesiredCapacity"],
            "template": g.get("LaunchTemplate")}


def versions(aws: Aws, template: str) -> list[tuple[int, str | None, str | None]]:
    found = aws.ec2.describe_launch_template_versions(LaunchTemplateId=template)["LaunchTemplateVersions"]
    return sorted((v["VersionNumber"], v.get("VersionDescription"), v["LaunchTemplateData"].get("InstanceType"))
                  for v in found)


def test_asg_capacity_happy_path(aws: Aws) -> None:
    make_group(aws)
    before = group(aws)
    kind = action("asg.rightsize", GROUP, CAPACITY)
    seen = kind.inspect()
    assert seen.tags == {"team": "web"}
    assert kind.refusal(seen) is None
    assert kind.plan(seen) == [f"update {GROUP}: DesiredCapacity 4 -> 2, MinSize 2 -> 1"]
    backup = converge(kind.backup, seen)
    assert backup.data == {"min": 2, "max": 6, "desired": 4}
    assert converge(kind.apply, seen, backup).changed
    converge(kind.verify, seen, backup)
    assert group(aws) == {**before, "min": 1, "desired": 2}
    assert converge(kind.revert, seen, backup).changed
    assert group(aws) == before


def test_asg_instance_type_happy_path(aws: Aws) -> None:
    template = make_group(aws)
    before = group(aws)
    kind = action("asg.rightsize", GROUP, RETYPE)
    seen = kind.inspect()
    assert (seen.state["instance_type"], seen.state["version_number"]) == ("m5.large", 1)
    assert kind.refusal(seen) is None
    backup = converge(kind.backup, seen)
    assert backup.data == {"min": 2, "max": 6, "desired": 4, "launch_template_id": template,
                           "launch_template_version": "$Default", "version_number": 1}
    result = converge(kind.apply, seen, backup)
    assert result.changed and result.data == {"launch_template_version": 2}
    converge(kind.verify, seen, backup)
    # AWS copies the rest of version 1 (SourceVersion); moto ignores SourceVersion and keeps only InstanceType.
    assert versions(aws, template) == [(1, None, "m5.large"), (2, f"reclaim:{EXEC}", "t3.large")]
    assert group(aws) == {**before, "template": {**before["template"], "Version": "2"}}
    assert converge(kind.revert, seen, backup).changed
    assert group(aws) == before
    assert len(versions(aws, template)) == 2  # versions are never deleted


def test_asg_revert_pins_latest_to_the_version_it_meant(aws: Aws) -> None:
    template = make_group(aws, version="$Latest")
    kind = action("asg.rightsize", GROUP, RETYPE)
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    converge(kind.apply, seen, backup)
    converge(kind.revert, seen, backup)
    # "$Latest" now means Reclaim's version 2; the group goes back to what it meant then.
    assert group(aws)["template"]["Version"] == "1"
    assert versions(aws, template)[0] == (1, None, "m5.large")


@pytest.mark.parametrize("params", [CAPACITY, RETYPE], ids=["capacity", "type"])
def test_asg_apply_twice_changes_once_and_revert_twice(params: dict[str, Any], aws: Aws) -> None:
    template = make_group(aws)
    kind = action("asg.rightsize", GROUP, params)
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    assert converge(kind.apply, seen, backup).changed
    applied = (group(aws), versions(aws, template))
    assert not converge(kind.apply, seen, backup).changed
    assert (group(aws), versions(aws, template)) == applied
    assert converge(kind.revert, seen, backup).changed
    reverted = (group(aws), versions(aws, template))
    second = converge(kind.revert, seen, backup)
    assert not second.changed
    assert (group(aws), versions(aws, template)) == reverted


def test_asg_finds_its_version_instead_of_creating_another(aws: Aws) -> None:
    """A retry after CreateLaunchTemplateVersion succeeded but before the group was updated."""
    template = make_group(aws)
    kind = action("asg.rightsize", GROUP, RETYPE)
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    aws.ec2.create_launch_template_version(LaunchTemplateId=template, VersionDescription=f"reclaim:{EXEC}",
                                           LaunchTemplateData={"InstanceType": "t3.large"})
    assert converge(kind.apply, seen, backup).changed
    assert len(versions(aws, template)) == 2
    assert group(aws)["template"]["Version"] == "2"


def test_asg_drift_is_refused(aws: Aws) -> None:
    template = make_group(aws)
    capacity, retype = action("asg.rightsize", GROUP, CAPACITY), action("asg.rightsize", GROUP, RETYPE)
    assert capacity.refusal(capacity.inspect()) is None and retype.refusal(retype.inspect()) is None
    aws.asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=5)
    aws.ec2.create_launch_template_version(LaunchTemplateId=template, SourceVersion="1",
                                           LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "c5.large"})
    aws.asg.update_auto_scaling_group(AutoScalingGroupName=GROUP,
                                      LaunchTemplate={"LaunchTemplateId": template, "Version": "2"})
    for kind in (capacity, retype):
        reason = kind.refusal(kind.inspect())
        assert reason is not None and reason.startswith("drift:"), reason


def test_asg_missing_group_is_refused(aws: Aws) -> None:
    with pytest.raises(Refused, match="no-such-group"):
        action("asg.rightsize", "no-such-group", CAPACITY).inspect()


@pytest.mark.parametrize(("params", "checked", "unverified"), [
    (CAPACITY, ["autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeScalingActivities"],
     ["autoscaling:UpdateAutoScalingGroup"]),
    (RETYPE, ["autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeScalingActivities",
              "ec2:DescribeLaunchTemplateVersions", "ec2:CreateLaunchTemplateVersion"],
     ["autoscaling:UpdateAutoScalingGroup", "ec2:RunInstances"]),
], ids=["capacity", "type"])
def test_asg_check_permissions_changes_nothing(params: dict[str, Any], checked: list[str],
                                               unverified: list[str], aws: Aws) -> None:
    template = make_group(aws)
    kind = action("asg.rightsize", GROUP, params)
    seen = kind.inspect()
    before = (group(aws), versions(aws, template))
    assert kind.check_permissions(seen) == checked
    assert kind.unverified_permissions() == unverified
    assert set(checked + unverified) <= set(kind.permissions)
    assert (group(aws), versions(aws, template)) == before


def test_asg_refuses_while_scaling_and_outside_bounds(aws: Aws) -> None:
    # moto's DescribeScalingActivities always answers an empty list: the check runs on an observation.
    make_group(aws)
    kind = action("asg.rightsize", GROUP, CAPACITY)
    seen = kind.inspect()
    busy = Observation(state={**seen.state, "busy": ["Launching a new EC2 instance (InProgress)"]})
    assert "scaling activities are in progress" in str(kind.refusal(busy))
    no_min = action("asg.rightsize", GROUP, {"expected_desired": 4, "target_desired": 1})
    assert "outside min 2 .. max 6" in str(no_min.refusal(no_min.inspect()))


def test_asg_apply_refuses_a_desired_changed_since_validation(aws: Aws) -> None:
    make_group(aws)
    kind = action("asg.rightsize", GROUP, CAPACITY)
    seen = kind.inspect()
    backup = kind.backup(seen)
    aws.asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=5)
    with pytest.raises(Refused, match="changed to 5"):
        kind.apply(seen, backup)
    assert group(aws)["desired"] == 5


@pytest.mark.parametrize(("params", "message"), [
    ({**CAPACITY, **RETYPE}, "exactly one"), ({}, "exactly one"),
    ({"expected_desired": 4}, "needs expected_desired and target_desired"),
    ({"expected_desired": 4, "target_desired": 2, "target_min": 3}, "target_min <= target_desired <= target_max"),
    ({"expected_desired": 4, "target_desired": 2, "target_max": 1}, "target_min <= target_desired <= target_max"),
    ({"expected_desired": 4, "target_desired": 4}, "must differ"),
    ({"expected_instance_type": "m5.large"}, "needs expected_instance_type and target_instance_type"),
    ({**CAPACITY, "extra": 1}, "Extra inputs"),
])
def test_asg_params_are_strict(params: dict[str, Any], message: str) -> None:
    with pytest.raises(Refused, match=message):
        action("asg.rightsize", GROUP, params)


def test_asg_savings(aws: Aws) -> None:
    make_group(aws)
    capacity, retype = action("asg.rightsize", GROUP, CAPACITY), action("asg.rightsize", GROUP, RETYPE)
    m5, t3 = ec2_monthly(REGION, "m5.large"), ec2_monthly(REGION, "t3.large")
    assert m5 is not None and t3 is not None
    assert capacity.estimate_monthly_savings(capacity.inspect()) == pytest.approx(2 * m5)
    assert retype.estimate_monthly_savings(retype.inspect()) == pytest.approx(4 * (m5 - t3))
    unknown = action("asg.rightsize", GROUP, {"expected_instance_type": "x9.huge", "target_instance_type": "m5.large"})
    assert unknown.estimate_monthly_savings(unknown.inspect()) == 10.0


# ---- dynamodb.billing_mode ---------------------------------------------------------------

TO_ON_DEMAND = {"expected_mode": "PROVISIONED", "target_mode": "PAY_PER_REQUEST"}
TO_PROVISIONED = {"expected_mode": "PAY_PER_REQUEST", "target_mode": "PROVISIONED",
                  "target_read_capacity": 50, "target_write_capacity": 20}


def make_table(aws: Aws, mode: str = "PROVISIONED") -> None:
    provisioned = mode == "PROVISIONED"
    gsi: dict[str, Any] = {"IndexName": "by-customer", "KeySchema": [{"AttributeName": "customer", "KeyType": "HASH"}],
                           "Projection": {"ProjectionType": "ALL"}}
    if provisioned:
        gsi["ProvisionedThroughput"] = {"ReadCapacityUnits": 7, "WriteCapacityUnits": 3}
    aws.ddb.create_table(
        TableName=TABLE, BillingMode=mode, GlobalSecondaryIndexes=[gsi],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"},
                              {"AttributeName": "customer", "AttributeType": "S"}],
        Tags=[{"Key": "team", "Value": "orders"}],
        **({"ProvisionedThroughput": {"ReadCapacityUnits": 10, "WriteCapacityUnits": 5}} if provisioned else {}))


def table(aws: Aws) -> dict[str, Any]:
    t = aws.ddb.describe_table(TableName=TABLE)["Table"]
    def caps(pt: dict[str, Any]) -> tuple[int, int]:
        return pt["ReadCapacityUnits"], pt["WriteCapacityUnits"]
    return {"mode": t["BillingModeSummary"]["BillingMode"], "status": t["TableStatus"],
            "table": caps(t["ProvisionedThroughput"]),
            "gsis": {g["IndexName"]: caps(g["ProvisionedThroughput"]) for g in t["GlobalSecondaryIndexes"]}}


def test_dynamodb_to_on_demand_happy_path(aws: Aws) -> None:
    make_table(aws)
    before = table(aws)
    assert before == {"mode": "PROVISIONED", "status": "ACTIVE", "table": (10, 5), "gsis": {"by-customer": (7, 3)}}
    kind = action("dynamodb.billing_mode", TABLE, TO_ON_DEMAND)
    seen = kind.inspect()
    assert seen.tags == {"team": "orders"}
    assert kind.refusal(seen) is None
    backup = converge(kind.backup, seen)
    assert backup.data == {"mode": "PROVISIONED", "read": 10, "write": 5, "gsis": {"by-customer": {"read": 7, "write": 3}}}
    assert converge(kind.apply, seen, backup).changed
    converge(kind.verify, seen, backup)
    # AWS reports 0 RCU/WCU for an on-demand table; moto keeps the old figures, so only the mode is compared.
    assert table(aws)["mode"] == "PAY_PER_REQUEST"
    assert converge(kind.revert, seen, backup).changed
    assert table(aws) == before


def test_dynamodb_to_provisioned_happy_path(aws: Aws) -> None:
    make_table(aws, "PAY_PER_REQUEST")
    kind = action("dynamodb.billing_mode", TABLE, TO_PROVISIONED)
    seen = kind.inspect()
    assert kind.refusal(seen) is None
    assert kind.plan(seen) == [f"switch table {TABLE} to PROVISIONED with 50 RCU / 20 WCU",
                               "set index by-customer to 50 RCU / 20 WCU"]
    backup = converge(kind.backup, seen)
    assert converge(kind.apply, seen, backup).changed
    converge(kind.verify, seen, backup)
    assert table(aws) == {"mode": "PROVISIONED", "status": "ACTIVE", "table": (50, 20), "gsis": {"by-customer": (50, 20)}}
    assert converge(kind.revert, seen, backup).changed
    assert table(aws)["mode"] == "PAY_PER_REQUEST"


@pytest.mark.parametrize(("mode", "params"), [("PROVISIONED", TO_ON_DEMAND), ("PAY_PER_REQUEST", TO_PROVISIONED)],
                         ids=["to-on-demand", "to-provisioned"])
def test_dynamodb_apply_twice_changes_once_and_revert_twice(mode: str, params: dict[str, Any], aws: Aws) -> None:
    make_table(aws, mode)
    kind = action("dynamodb.billing_mode", TABLE, params)
    seen = kind.inspect()
    backup = converge(kind.backup, seen)
    assert converge(kind.apply, seen, backup).changed
    applied = table(aws)
    assert not converge(kind.apply, seen, backup).changed
    assert table(aws) == applied
    assert converge(kind.revert, seen, backup).changed
    reverted = table(aws)
    assert not converge(kind.revert, seen, backup).changed
    assert table(aws) == reverted


def test_dynamodb_drift_and_missing_are_refused(aws: Aws) -> None:
    make_table(aws)
    kind = action("dynamodb.billing_mode", TABLE, TO_ON_DEMAND)
    assert kind.refusal(kind.inspect()) is None
    aws.ddb.update_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST")
    reason = kind.refusal(kind.inspect())
    assert reason is not None and reason.startswith("drift:"), reason
    with pytest.raises(Refused, match="no-such-table"):
        action("dynamodb.billing_mode", "no-such-table", TO_ON_DEMAND).inspect()


def test_dynamodb_check_permissions_changes_nothing(aws: Aws) -> None:
    make_table(aws)
    kind = action("dynamodb.billing_mode", TABLE, TO_ON_DEMAND)
    seen = kind.inspect()
    before = table(aws)
    assert kind.check_permissions(seen) == ["dynamodb:DescribeTable", "dynamodb:ListTagsOfResource"]
    assert kind.unverified_permissions() == ["dynamodb:UpdateTable"]
    assert set(kind.check_permissions(seen) + kind.unverified_permissions()) <= set(kind.permissions)
    assert table(aws) == before


def test_dynamodb_refuses_on_demand_within_24_hours(aws: Aws) -> None:
    # moto does not record BillingModeSummary.LastUpdateToPayPerRequestDateTime: checked on an observation.
    make_table(aws)
    kind = action("dynamodb.billing_mode", TABLE, TO_ON_DEMAND)
    seen = kind.inspect()
    assert seen.state["last_switch_to_on_demand"] is None
    recent = datetime.now(UTC) - timedelta(hours=20)
    reason = kind.refusal(Observation(state={**seen.state, "last_switch_to_on_demand": recent.isoformat()}))
    assert reason is not None and f"allowed again from {(recent + timedelta(hours=24)).isoformat()}" in reason
    old = (datetime.now(UTC) - timedelta(hours=25)).isoformat()
    assert kind.refusal(Observation(state={**seen.state, "last_switch_to_on_demand": old})) is None
    module = sys.modules[type(kind).__module__]
    assert module.on_demand_allowed_from(recent.isoformat(), recent + timedelta(hours=24)) is None


def test_dynamodb_switch_to_provisioned_ignores_the_24_hour_rule(aws: Aws) -> None:
    make_table(aws, "PAY_PER_REQUEST")
    kind = action("dynamodb.billing_mode", TABLE, TO_PROVISIONED)
    seen = kind.inspect()
    just_now = datetime.now(UTC).isoformat()
    assert kind.refusal(Observation(state={**seen.state, "last_switch_to_on_demand": just_now})) is None


def test_dynamodb_refuses_a_table_not_active(aws: Aws) -> None:
    # moto reports every table and index ACTIVE at once: checked on an observation.
    make_table(aws)
    kind = action("dynamodb.billing_mode", TABLE, TO_ON_DEMAND)
    seen = kind.inspect()
    updating = {**seen.state, "gsis": {"by-customer": {"status": "UPDATING", "read": 7, "write": 3}}}
    assert "index by-customer is UPDATING" in str(kind.refusal(Observation(state=updating)))


def test_dynamodb_revert_surfaces_aws_refusal(aws: Aws) -> None:
    make_table(aws, "PAY_PER_REQUEST")
    # AWS keeps refusing until the limit resets; botocore retries the code (it counts as throttling) first.
    faults = FaultInjector([FaultRule("UpdateTable", "LimitExceededException", "switch limit reached")])
    plain = action("dynamodb.billing_mode", TABLE, TO_PROVISIONED)
    seen = plain.inspect()
    backup = converge(plain.backup, seen)
    converge(plain.apply, seen, backup)
    kind = action("dynamodb.billing_mode", TABLE, TO_PROVISIONED, SessionFactory(session_hooks=[faults.install]))
    with pytest.raises(RevertImpossible, match="LimitExceededException: switch limit reached"):
        kind.revert(seen, backup)
    assert table(aws)["mode"] == "PROVISIONED"


@pytest.mark.parametrize(("params", "message"), [
    ({"expected_mode": "PAY_PER_REQUEST", "target_mode": "PROVISIONED"}, "needs target_read_capacity"),
    ({"expected_mode": "PROVISIONED", "target_mode": "PROVISIONED", "target_read_capacity": 1,
      "target_write_capacity": 1}, "must differ"),
    ({**TO_ON_DEMAND, "target_read_capacity": 5}, "only for PROVISIONED"),
    ({**TO_ON_DEMAND, "target_mode": "ON_DEMAND"}, "target_mode"),
])
def test_dynamodb_params_are_strict(params: dict[str, Any], message: str) -> None:
    with pytest.raises(Refused, match=message):
        action("dynamodb.billing_mode", TABLE, params)


def test_dynamodb_savings(aws: Aws) -> None:
    make_table(aws, "PAY_PER_REQUEST")
    usage = {"monthly_read_requests": 300e6, "monthly_write_requests": 60e6}
    kind = action("dynamodb.billing_mode", TABLE, {**TO_PROVISIONED, **usage})
    price = section("dynamodb")
    on_demand = 300 * price["read_request_million"] + 60 * price["write_request_million"]
    provisioned = 2 * (50 * price["rcu_hour"] + 20 * price["wcu_hour"]) * hours_per_month()  # table + 1 GSI
    assert kind.estimate_monthly_savings(kind.inspect()) == pytest.approx(on_demand - provisioned)
    fallback = action("dynamodb.billing_mode", TABLE, TO_PROVISIONED, savings=42.0)
    assert fallback.estimate_monthly_savings(fallback.inspect()) == 42.0
