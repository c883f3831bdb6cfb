"""domain/sources.py: every source item maps to a Recommendation Reclaim can start, or is counted
as not executable with a reason; the mapping is deterministic; saved CLI output is recognised."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activities.actions.base import action_class, resource_id_problem
from activities.sources import checked
from domain.recommendation import Recommendation
from domain.sources import (
    COH,
    COMPUTE_OPTIMIZER,
    TRUSTED_ADVISOR,
    ImportContext,
    Skipped,
    SourceItem,
    UnknownOutput,
    build_report,
    import_report,
    items_from_cli_output,
    map_item,
    resource_name_from_arn,
    source_risk_reasons,
)

CTX = ImportContext(customer_id="acme")
ACCOUNT = "123456789012"
INSTANCE = "i-0123456789abcdef0"
VOLUME = "vol-0123456789abcdef0"


def startable(rec: Recommendation) -> None:
    """What `reclaim execute` checks before it starts anything: the kind, its resource id, its params."""
    kind = action_class(rec.kind)
    assert resource_id_problem(kind.resource_type, rec.resource_id) is None, rec
    kind.parse_params(rec.params)


def coh(action: str, rtype: str, *, rid: str = INSTANCE, arn: str | None = None,
        current: dict[str, Any] | None = None, recommended: dict[str, Any] | None = None,
        **extra: Any) -> SourceItem:
    item = {"recommendationId": f"rec-{action}-{rtype}-{rid}", "accountId": ACCOUNT, "region": "us-east-1",
            "resourceId": rid, "resourceArn": arn or f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/{rid}",
            "actionType": action, "currentResourceType": rtype, "estimatedMonthlySavings": 12.5,
            "restartNeeded": True, "rollbackPossible": True, "implementationEffort": "Medium",
            "tags": [{"key": "team", "value": "web"}], **extra}
    details = {"currentResourceDetails": current or {}, "recommendedResourceDetails": recommended or {}}
    return SourceItem(source=COH, shape="coh", item=item, details=details)


def ec2(t: str) -> dict[str, Any]:
    return {"ec2Instance": {"configuration": {"instance": {"type": t}}}}


def ebs(t: str, size: float = 100.0, iops: float | None = None, throughput: float | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"storage": {"type": t, "sizeInGb": size}}
    if iops is not None:
        config["performance"] = {"iops": iops, "throughput": throughput}
    return {"ebsVolume": {"configuration": config}}


def rds(c: str) -> dict[str, Any]:
    return {"rdsDbInstance": {"configuration": {"instance": {"dbInstanceClass": c}}}}


def lam(mb: int) -> dict[str, Any]:
    return {"lambdaFunction": {"configuration": {"compute": {"memorySizeInMB": mb, "vCpu": 1.0}}}}


def asg(t: str) -> dict[str, Any]:
    return {"ec2AutoScalingGroup": {"configuration": {"instance": {"type": t}, "type": "SingleInstanceType"}}}


LAMBDA_ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:resize-images"
ASG_ARN = f"arn:aws:autoscaling:us-east-1:{ACCOUNT}:autoScalingGroup:1f2e3d4c-aaaa-bbbb-cccc-0123456789ab:autoScalingGroupName/web-asg"
RDS_ARN = f"arn:aws:rds:us-east-1:{ACCOUNT}:db:orders-db"

COH_TABLE = [
    (coh("Stop", "Ec2Instance", current=ec2("m5.large")), "ec2.stop", INSTANCE,
     {"expected_instance_type": "m5.large"}),
    (coh("Rightsize", "Ec2Instance", current=ec2("m5.2xlarge"), recommended=ec2("m5.large")), "ec2.rightsize",
     INSTANCE, {"expected_instance_type": "m5.2xlarge", "target_instance_type": "m5.large"}),
    (coh("Rightsize", "RdsDbInstance", rid="db-ABCDEFGHIJKL", arn=RDS_ARN, current=rds("db.m5.xlarge"),
         recommended=rds("db.m5.large")), "rds.rightsize", "orders-db",
     {"expected_instance_class": "db.m5.xlarge", "target_instance_class": "db.m5.large"}),
    (coh("Delete", "EbsVolume", rid=VOLUME, current=ebs("gp2", 100.0)), "ebs.delete", VOLUME,
     {"expected_size_gib": 100, "expected_volume_type": "gp2"}),
    (coh("Upgrade", "EbsVolume", rid=VOLUME, current=ebs("gp2"), recommended=ebs("gp3", 100.0, 3000.0, 125.0)),
     "ebs.gp2_to_gp3", VOLUME, {"target_iops": 3000, "target_throughput": 125}),
    (coh("Rightsize", "LambdaFunction", rid="resize-images", arn=LAMBDA_ARN, current=lam(1024),
         recommended=lam(512)), "lambda.memory", "resize-images",
     {"expected_memory_mb": 1024, "target_memory_mb": 512}),
    (coh("Rightsize", "Ec2AutoScalingGroup", rid="web-asg", arn=ASG_ARN, current=asg("m5.xlarge"),
         recommended=asg("m5.large")), "asg.rightsize", "web-asg",
     {"expected_instance_type": "m5.xlarge", "target_instance_type": "m5.large"}),
    (coh("ScaleIn", "Ec2AutoScalingGroup", rid="web-asg", arn=ASG_ARN, current=asg("c5.xlarge"),
         recommended=asg("c5.large")), "asg.rightsize", "web-asg",
     {"expected_instance_type": "c5.xlarge", "target_instance_type": "c5.large"}),
]


@pytest.mark.parametrize(("item", "kind", "resource_id", "params"), COH_TABLE,
                         ids=[f"{t[0].item['actionType']}-{t[0].item['currentResourceType']}" for t in COH_TABLE])
def test_cost_optimization_hub_item_maps_to_its_kind(item: SourceItem, kind: str, resource_id: str,
                                                     params: dict[str, Any]) -> None:
    rec = map_item(item, CTX)
    assert isinstance(rec, Recommendation), rec
    assert (rec.kind, rec.resource_id, rec.params) == (kind, resource_id, params)
    assert rec.source == COH and rec.source_id == item.item["recommendationId"]
    assert rec.id.startswith("coh-") and rec.customer_id == "acme" and rec.estimated_monthly_savings == 12.5
    assert rec.source_details["restartNeeded"] is True and rec.source_details["implementationEffort"] == "Medium"
    assert rec.tags == {"team": "web"}
    startable(rec)


def test_hub_risk_inputs_become_reasons() -> None:
    rec = map_item(coh("Stop", "Ec2Instance", rollbackPossible=False, implementationEffort="High"), CTX)
    assert isinstance(rec, Recommendation)
    reasons = source_risk_reasons(rec)
    assert any("restart" in r for r in reasons) and any("rolled back" in r for r in reasons)
    assert any("High" in r for r in reasons)


@pytest.mark.parametrize(("item", "reason_part"), [
    (coh("PurchaseSavingsPlans", "ComputeSavingsPlans"), "no Reclaim kind for PurchaseSavingsPlans"),
    (coh("PurchaseReservedInstances", "RdsReservedInstances"), "no Reclaim kind"),
    (coh("MigrateToGraviton", "Ec2Instance"), "no Reclaim kind for MigrateToGraviton Ec2Instance"),
    (coh("Rightsize", "EcsService"), "no Reclaim kind"),
    (coh("Delete", "NatGateway"), "no Reclaim kind"),
    (coh("Rightsize", "Ec2Instance"), "no resource details"),
    (coh("Upgrade", "EbsVolume", rid=VOLUME, current=ebs("io1"), recommended=ebs("gp3")), "io1 -> gp3"),
    (coh("ScaleIn", "Ec2AutoScalingGroup", rid="web-asg", arn=ASG_ARN), "capacity target"),
])
def test_what_is_not_executable_yet_is_counted_with_a_reason(item: SourceItem, reason_part: str) -> None:
    outcome = map_item(item, CTX)
    assert isinstance(outcome, Skipped) and reason_part in outcome.reason, outcome
    report = build_report(COH, [outcome, outcome, map_item(COH_TABLE[0][0], CTX)])
    assert report.imported_by_kind == {"ec2.stop": 1}
    assert [(n.action_type, n.resource_type, n.count) for n in report.not_executable] == [
        (item.item["actionType"], item.item["currentResourceType"], 2)]


def test_a_resource_id_the_kind_refuses_is_counted_not_imported() -> None:
    """The domain keeps to Recommendation's own rules (no spaces: counted as invalid); the kind's own id
    form (i-<hex>) is checked by `activities.sources.checked`, as `reclaim execute` would."""
    outcome = map_item(coh("Stop", "Ec2Instance", rid="web server"), CTX)
    assert isinstance(outcome, Skipped) and "resource_id" in outcome.reason
    report = checked(import_report(COH, [coh("Stop", "Ec2Instance", rid="web-1"), COH_TABLE[0][0]], CTX))
    assert report.imported_by_kind == {"ec2.stop": 1}
    assert [(n.action_type, n.count) for n in report.not_executable] == [("ec2.stop", 1)]
    assert "AWS::EC2::Instance" in report.not_executable[0].reason


# ---- Compute Optimizer and Trusted Advisor ----------------------------------------------------


def co(shape: str, item: dict[str, Any]) -> SourceItem:
    return SourceItem(source=COMPUTE_OPTIMIZER, shape=shape, item={"accountId": ACCOUNT, **item})


def saving(value: float) -> dict[str, Any]:
    return {"savingsOpportunity": {"estimatedMonthlySavings": {"currency": "USD", "value": value}}}


CO_TABLE = [
    (co("co.ec2", {"instanceArn": f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/{INSTANCE}",
                   "currentInstanceType": "m5.2xlarge", "finding": "Overprovisioned",
                   "recommendationOptions": [{"instanceType": "m5.xlarge", "rank": 2, **saving(30)},
                                             {"instanceType": "m5.large", "rank": 1, **saving(60)}]}),
     "ec2.rightsize", INSTANCE, {"expected_instance_type": "m5.2xlarge", "target_instance_type": "m5.large"}, 60),
    (co("co.ebs", {"volumeArn": f"arn:aws:ec2:eu-west-1:{ACCOUNT}:volume/{VOLUME}", "finding": "NotOptimized",
                   "currentConfiguration": {"volumeType": "gp2", "volumeSize": 100},
                   "volumeRecommendationOptions": [{"configuration": {
                       "volumeType": "gp3", "volumeSize": 100, "volumeBaselineIOPS": 3000,
                       "volumeBaselineThroughput": 125}, "rank": 1, **saving(2)}]}),
     "ebs.gp2_to_gp3", VOLUME, {"target_iops": 3000, "target_throughput": 125}, 2),
    (co("co.lambda", {"functionArn": "arn:aws:lambda:eu-west-1:123456789012:function:thumbs:$LATEST",
                      "currentMemorySize": 2048, "finding": "NotOptimized",
                      "memorySizeRecommendationOptions": [{"rank": 1, "memorySize": 1024, **saving(3)}]}),
     "lambda.memory", "thumbs", {"expected_memory_mb": 2048, "target_memory_mb": 1024}, 3),
    (co("co.rds", {"resourceArn": f"arn:aws:rds:eu-west-1:{ACCOUNT}:db:orders", "instanceFinding": "Overprovisioned",
                   "currentDBInstanceClass": "db.r5.2xlarge",
                   "instanceRecommendationOptions": [{"dbInstanceClass": "db.r5.xlarge", "rank": 1, **saving(200)}]}),
     "rds.rightsize", "orders", {"expected_instance_class": "db.r5.2xlarge", "target_instance_class": "db.r5.xlarge"},
     200),
    (co("co.idle", {"resourceArn": f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/{INSTANCE}", "resourceId": INSTANCE,
                    "resourceType": "EC2Instance", "finding": "Idle", **saving(40)}), "ec2.stop", INSTANCE, {}, 40),
    (co("co.idle", {"resourceArn": f"arn:aws:ec2:eu-west-1:{ACCOUNT}:volume/{VOLUME}", "resourceId": VOLUME,
                    "resourceType": "EBSVolume", "finding": "Unattached", **saving(8)}), "ebs.delete", VOLUME, {}, 8),
    (co("co.idle", {"resourceArn": f"arn:aws:rds:eu-west-1:{ACCOUNT}:db:reports", "resourceId": "db-XYZ",
                    "resourceType": "RDSDBInstance", "finding": "Idle", **saving(90)}), "rds.stop", "reports", {}, 90),
]


@pytest.mark.parametrize(("item", "kind", "resource_id", "params", "savings"), CO_TABLE,
                         ids=[f"{t[0].shape}-{t[1]}" for t in CO_TABLE])
def test_compute_optimizer_item_maps_to_its_kind(item: SourceItem, kind: str, resource_id: str,
                                                 params: dict[str, Any], savings: float) -> None:
    rec = map_item(item, CTX)
    assert isinstance(rec, Recommendation), rec
    assert (rec.kind, rec.resource_id, rec.params, rec.estimated_monthly_savings) == (kind, resource_id, params,
                                                                                     savings)
    assert rec.region == "eu-west-1" and rec.account_id == ACCOUNT and rec.source == COMPUTE_OPTIMIZER
    startable(rec)


@pytest.mark.parametrize("item", [
    co("co.ec2", {"instanceArn": f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/{INSTANCE}", "finding": "Optimized",
                  "currentInstanceType": "m5.large", "recommendationOptions": []}),
    co("co.idle", {"resourceArn": f"arn:aws:ec2:eu-west-1:{ACCOUNT}:natgateway/nat-1", "resourceId": "nat-1",
                   "resourceType": "NatGateway", "finding": "Unused"}),
    co("co.ebs", {"volumeArn": f"arn:aws:ec2:eu-west-1:{ACCOUNT}:volume/{VOLUME}", "finding": "NotOptimized",
                  "currentConfiguration": {"volumeType": "io1"},
                  "volumeRecommendationOptions": [{"configuration": {"volumeType": "io2"}, "rank": 1}]}),
    co("co.error", {"identifier": "arn:x", "code": "AccessDenied", "message": "no", "operation": "x"}),
])
def test_compute_optimizer_what_is_not_executable_has_a_reason(item: SourceItem) -> None:
    outcome = map_item(item, CTX)
    assert isinstance(outcome, Skipped) and outcome.reason


def ta(check: str, rid: str, savings: str = "$12.00") -> SourceItem:
    return SourceItem(source=TRUSTED_ADVISOR, shape="ta", item={
        "id": f"res-{rid}", "arn": f"arn:aws:trustedadvisor::{ACCOUNT}:recommendation-resource/{rid}",
        "awsResourceId": rid, "regionCode": "us-west-2", "status": "warning",
        "metadata": {"0": "us-west-2", "1": rid, "4": savings},
        "recommendationArn": f"arn:aws:trustedadvisor::{ACCOUNT}:recommendation/r1"},
        details={"recommendation": {"arn": f"arn:aws:trustedadvisor::{ACCOUNT}:recommendation/r1",
                                    "checkArn": f"arn:aws:trustedadvisor:::check/{check}", "name": "n"},
                 "check": {"arn": f"arn:aws:trustedadvisor:::check/{check}",
                           "metadata": {"0": "Region", "1": "Resource", "4": "Estimated Monthly Savings"}}})


@pytest.mark.parametrize(("item", "kind"), [
    (ta("Qch7DwouX1", INSTANCE), "ec2.stop"),
    (ta("Z4AUBRNSmz", "eipalloc-0123456789abcdef0"), "eip.release"),
    (ta("DAvU99Dc4C", VOLUME), "ebs.delete"),
    (ta("Ti39halfu8", "reports-db"), "rds.stop"),
])
def test_trusted_advisor_check_maps_to_its_kind(item: SourceItem, kind: str) -> None:
    rec = map_item(item, CTX)
    assert isinstance(rec, Recommendation), rec
    assert rec.kind == kind and rec.region == "us-west-2" and rec.account_id == ACCOUNT
    assert rec.estimated_monthly_savings == 12.0
    startable(rec)


def test_trusted_advisor_idle_load_balancers_and_bare_ips_are_not_executable() -> None:
    report = import_report(TRUSTED_ADVISOR, [ta("hjLMh88uM8", "my-lb"), ta("hjLMh88uM8", "other-lb"),
                                             ta("Z4AUBRNSmz", "203.0.113.7")], CTX)
    assert report.recommendations == []
    assert {(n.resource_type, n.count) for n in report.not_executable} == {
        ("Idle Load Balancers", 2), ("Unassociated Elastic IP Addresses", 1)}


# ---- saved CLI output --------------------------------------------------------------------------


def test_saved_outputs_are_recognised_by_shape() -> None:
    assert items_from_cli_output({"items": [COH_TABLE[0][0].item], "nextToken": "x"})[0] == COH
    single = {**COH_TABLE[1][0].item, **COH_TABLE[1][0].details}
    source, items = items_from_cli_output(single)
    assert source == COH and isinstance(map_item(items[0], CTX), Recommendation)
    for item, *_ in CO_TABLE:
        key = {"co.ec2": "instanceRecommendations", "co.ebs": "volumeRecommendations",
               "co.lambda": "lambdaFunctionRecommendations", "co.rds": "rdsDBRecommendations",
               "co.idle": "idleRecommendations"}[item.shape]
        source, items = items_from_cli_output({key: [item.item], "errors": []})
        assert source == COMPUTE_OPTIMIZER and items == [item]
    bads: list[Any] = [[], [1], "x", {"Reservations": []}, {"items": [], "instanceRecommendations": []}]
    for bad in bads:
        with pytest.raises(UnknownOutput):
            items_from_cli_output(bad)


def test_list_output_without_details_counts_rightsizes_as_needing_details() -> None:
    bare = [{**item.item} for item, *_ in COH_TABLE]
    _, items = items_from_cli_output({"items": bare})
    report = import_report(COH, items, CTX)
    assert report.imported_by_kind == {"ebs.delete": 1, "ec2.stop": 1}
    assert report.not_executable_total == len(bare) - 2
    assert all("details" in n.reason for n in report.not_executable)


def test_arn_names() -> None:
    assert resource_name_from_arn(LAMBDA_ARN + ":$LATEST") == "resize-images"
    assert resource_name_from_arn(ASG_ARN) == "web-asg"
    assert resource_name_from_arn(RDS_ARN) == "orders-db"
    assert resource_name_from_arn("not an arn") is None


# ---- properties ---------------------------------------------------------------------------------

ACTIONS = ["Rightsize", "Stop", "Upgrade", "PurchaseSavingsPlans", "PurchaseReservedInstances",
           "MigrateToGraviton", "Delete", "ScaleIn", "Other"]
RESOURCE_TYPES = ["Ec2Instance", "LambdaFunction", "EbsVolume", "EcsService", "Ec2AutoScalingGroup",
                  "ComputeSavingsPlans", "Ec2ReservedInstances", "RdsDbInstance", "NatGateway", "DynamoDBTable"]
text = st.text(min_size=0, max_size=12)
maybe = st.one_of(st.none(), st.sampled_from(["m5.large", "m5.xlarge", "db.m5.large", "gp2", "gp3", "io1", ""]), text)
numbers = st.one_of(st.none(), st.integers(-5, 20000), st.floats(allow_nan=True, allow_infinity=True))


@st.composite
def details(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "ec2Instance": {"configuration": {"instance": {"type": draw(maybe)}}},
        "rdsDbInstance": {"configuration": {"instance": {"dbInstanceClass": draw(maybe)}}},
        "ebsVolume": {"configuration": {"storage": {"type": draw(maybe), "sizeInGb": draw(numbers)},
                                        "performance": {"iops": draw(numbers), "throughput": draw(numbers)}}},
        "lambdaFunction": {"configuration": {"compute": {"memorySizeInMB": draw(numbers)}}},
        "ec2AutoScalingGroup": {"configuration": {"instance": {"type": draw(maybe)}}},
    }


@st.composite
def coh_items(draw: st.DrawFn) -> SourceItem:
    rid = draw(st.one_of(st.sampled_from([INSTANCE, VOLUME, "orders-db", "web-asg", "fn"]), text))
    item = {
        "recommendationId": draw(st.one_of(st.uuids().map(str), text)),
        "accountId": draw(st.one_of(st.just(ACCOUNT), text)), "region": draw(st.one_of(st.just("us-east-1"), text)),
        "resourceId": rid, "resourceArn": draw(st.one_of(st.just(f"arn:aws:x:us-east-1:{ACCOUNT}:thing/{rid}"), text)),
        "actionType": draw(st.sampled_from(ACTIONS)), "currentResourceType": draw(st.sampled_from(RESOURCE_TYPES)),
        "estimatedMonthlySavings": draw(numbers), "restartNeeded": draw(st.booleans()),
        "tags": draw(st.lists(st.fixed_dictionaries({"key": text, "value": text}), max_size=2)),
    }
    extra = draw(st.one_of(st.just({}), st.builds(lambda c, r: {"currentResourceDetails": c,
                                                                "recommendedResourceDetails": r},
                                                  details(), details())))
    return SourceItem(source=COH, shape="coh", item=item, details=extra)


@st.composite
def co_items(draw: st.DrawFn) -> SourceItem:
    item, *_ = draw(st.sampled_from(CO_TABLE))
    mutated = dict(item.item)
    for key in draw(st.lists(st.sampled_from(sorted(mutated)), max_size=3)):
        mutated[key] = draw(st.one_of(st.none(), text, numbers, st.just([])))
    return SourceItem(source=item.source, shape=item.shape, item=mutated)


any_item = st.one_of(coh_items(), co_items(),
                     st.builds(ta, st.sampled_from(["Qch7DwouX1", "Z4AUBRNSmz", "DAvU99Dc4C", "Ti39halfu8",
                                                    "hjLMh88uM8", "zzz"]),
                               st.one_of(st.sampled_from([INSTANCE, VOLUME, "eipalloc-0a"]), text), text))


@settings(max_examples=300, deadline=None)
@given(st.lists(any_item, max_size=8))
def test_every_item_is_a_startable_recommendation_or_counted_with_a_reason(items: list[SourceItem]) -> None:
    outcomes = [map_item(item, CTX) for item in items]
    for outcome in outcomes:
        if isinstance(outcome, Recommendation):
            Recommendation.model_validate(outcome.model_dump(mode="json"))  # survives the store's round trip
            action_class(outcome.kind).parse_params(outcome.params)
        else:
            assert isinstance(outcome, Skipped) and outcome.reason.strip()
    report = build_report("mixed", outcomes)
    recs = [o for o in outcomes if isinstance(o, Recommendation)]
    assert len(report.recommendations) == len({r.id for r in recs})
    assert report.not_executable_total == len(outcomes) - len(recs)
    final = checked(report)
    for rec in final.recommendations:
        startable(rec)
    assert len(final.recommendations) + final.not_executable_total == len(report.recommendations) + len(
        outcomes) - len(recs)


@settings(max_examples=200, deadline=None)
@given(any_item)
def test_mapping_is_deterministic(item: SourceItem) -> None:
    copy = SourceItem.model_validate(item.model_dump())
    assert map_item(item, CTX) == map_item(copy, CTX)
