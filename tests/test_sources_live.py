"""activities/sources against botocore's Stubber (moto has none of these services): responses the
service models validate, fetched through the same SessionFactory seam the worker uses, paged, and
errors such as AccessDeniedException for an account not enrolled; and `reclaim import` on them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.stub import Stubber
from typer.testing import CliRunner

from activities.aws import SessionFactory
from activities.sources import SourceError, SourceFilters, import_live, registry
from domain.sources import COH, COMPUTE_OPTIMIZER, TRUSTED_ADVISOR, ImportContext

ACCOUNT = "123456789012"
I1, I2 = "i-0123456789abcdef0", "i-0fedcba9876543210"
V1 = "vol-0123456789abcdef0"
CTX = ImportContext(customer_id="acme")
WHEN = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "eu-west-1")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture
def sessions() -> SessionFactory:
    return SessionFactory()


def stubbed(sessions: SessionFactory, region: str, service: str, account: str = "self") -> Stubber:
    client = sessions.client(account, region, service)
    assert isinstance(client, BaseClient), "these services must not go through the gateway wrapper"
    return Stubber(client)


@pytest.fixture
def stub(sessions: SessionFactory) -> Iterator[Any]:
    opened: list[Stubber] = []

    def make(region: str, service: str, account: str = "self") -> Stubber:
        stubber = stubbed(sessions, region, service, account)
        stubber.activate()
        opened.append(stubber)
        return stubber

    yield make
    for stubber in opened:
        stubber.assert_no_pending_responses()
        stubber.deactivate()


def test_registry_finds_every_live_source() -> None:
    assert set(registry()) == {COH, COMPUTE_OPTIMIZER, TRUSTED_ADVISOR}


# ---- Cost Optimization Hub ----------------------------------------------------------------------


def hub_item(rid: str, action: str, rtype: str, **extra: Any) -> dict[str, Any]:
    return {"recommendationId": f"rec-{rid}", "accountId": ACCOUNT, "region": "eu-west-1", "resourceId": rid,
            "resourceArn": f"arn:aws:ec2:eu-west-1:{ACCOUNT}:thing/{rid}", "actionType": action,
            "currentResourceType": rtype, "estimatedMonthlySavings": 20.0, "restartNeeded": True,
            "rollbackPossible": True, "implementationEffort": "Low", "lastRefreshTimestamp": WHEN,
            "tags": [{"key": "env", "value": "dev"}], **extra}


def hub_details(rid: str, action: str, rtype: str, current: dict[str, Any], recommended: dict[str, Any]
                ) -> dict[str, Any]:
    return {"recommendationId": f"rec-{rid}", "resourceId": rid, "accountId": ACCOUNT, "region": "eu-west-1",
            "actionType": action, "currentResourceType": rtype, "recommendedResourceType": rtype,
            "estimatedMonthlySavings": 20.0, "restartNeeded": True, "rollbackPossible": True,
            "implementationEffort": "Low", "currentResourceDetails": current,
            "recommendedResourceDetails": recommended}


def ec2(t: str) -> dict[str, Any]:
    return {"ec2Instance": {"configuration": {"instance": {"type": t}}}}


def ebs(t: str) -> dict[str, Any]:
    return {"ebsVolume": {"configuration": {"storage": {"type": t, "sizeInGb": 50.0},
                                            "performance": {"iops": 3000.0, "throughput": 125.0}}}}


def stub_hub(stubber: Stubber, expected_filter: dict[str, Any] | None = None) -> None:
    first = {"filter": expected_filter} if expected_filter else {}
    stubber.add_response("list_recommendations", {
        "items": [hub_item(I1, "Rightsize", "Ec2Instance"),
                  hub_item("sp-1", "PurchaseSavingsPlans", "ComputeSavingsPlans")],
        "nextToken": "page-2"}, first)
    stubber.add_response("get_recommendation", hub_details(I1, "Rightsize", "Ec2Instance", ec2("m5.2xlarge"),
                                                           ec2("m5.large")), {"recommendationId": f"rec-{I1}"})
    stubber.add_response("list_recommendations", {
        "items": [hub_item(V1, "Upgrade", "EbsVolume"), hub_item("ri-1", "PurchaseReservedInstances",
                                                                 "Ec2ReservedInstances")]},
        {**first, "nextToken": "page-2"})
    stubber.add_response("get_recommendation", hub_details(V1, "Upgrade", "EbsVolume", ebs("gp2"), ebs("gp3")),
                         {"recommendationId": f"rec-{V1}"})


def test_hub_pages_and_details_become_kinds(sessions: SessionFactory, stub: Any) -> None:
    stub_hub(stub("us-east-1", "cost-optimization-hub"), {"regions": ["eu-west-1"]})
    report = import_live(sessions, COH, SourceFilters(regions=["eu-west-1"]), CTX)
    assert report.imported_by_kind == {"ebs.gp2_to_gp3": 1, "ec2.rightsize": 1}
    rightsize = next(r for r in report.recommendations if r.kind == "ec2.rightsize")
    assert rightsize.params == {"expected_instance_type": "m5.2xlarge", "target_instance_type": "m5.large"}
    assert rightsize.source_id == f"rec-{I1}" and rightsize.source_details["restartNeeded"] is True
    assert rightsize.tags == {"env": "dev"} and rightsize.created_at == WHEN
    assert {(n.action_type, n.count) for n in report.not_executable} == {
        ("PurchaseSavingsPlans", 1), ("PurchaseReservedInstances", 1)}


def test_hub_filters_are_the_hubs_own(sessions: SessionFactory, stub: Any) -> None:
    stubber = stub("us-east-1", "cost-optimization-hub", ACCOUNT)
    stubber.add_response("list_recommendations", {"items": []}, {"filter": {
        "accountIds": [ACCOUNT], "actionTypes": ["Stop"], "resourceTypes": ["Ec2Instance"],
        "tags": [{"key": "team", "value": "web"}]}})
    report = import_live(sessions, COH, SourceFilters(
        account_ids=[ACCOUNT], action_types=["Stop"], resource_types=["Ec2Instance"], tags={"team": "web"}), CTX)
    assert report.recommendations == [] and report.not_executable == []


def test_reimport_gives_the_same_recommendations(sessions: SessionFactory, stub: Any) -> None:
    stubber = stub("us-east-1", "cost-optimization-hub")
    stub_hub(stubber)
    stub_hub(stubber)
    first = import_live(sessions, COH, SourceFilters(), CTX)
    assert first == import_live(sessions, COH, SourceFilters(), CTX)


def test_an_account_not_enrolled_is_one_line(sessions: SessionFactory, stub: Any) -> None:
    stub("us-east-1", "cost-optimization-hub").add_client_error(
        "list_recommendations", service_error_code="AccessDeniedException", http_status_code=403,
        service_message="The account is not enrolled in Cost Optimization Hub")
    with pytest.raises(SourceError, match="AccessDeniedException: The account is not enrolled") as caught:
        import_live(sessions, COH, SourceFilters(), CTX)
    assert "\n" not in str(caught.value)


# ---- Compute Optimizer ----------------------------------------------------------------------------


def saving(value: float) -> dict[str, Any]:
    return {"savingsOpportunity": {"savingsOpportunityPercentage": 30.0,
                                   "estimatedMonthlySavings": {"currency": "USD", "value": value}}}


def stub_compute_optimizer(stubber: Stubber) -> None:
    arn = f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/"
    stubber.add_response("get_ec2_instance_recommendations", {"instanceRecommendations": [
        {"instanceArn": arn + I1, "accountId": ACCOUNT, "currentInstanceType": "m5.2xlarge",
         "finding": "Overprovisioned", "lastRefreshTimestamp": WHEN,
         "recommendationOptions": [{"instanceType": "m5.large", "rank": 1, **saving(70.0)}]}],
        "nextToken": "t2", "errors": []}, {})
    stubber.add_response("get_ec2_instance_recommendations", {"instanceRecommendations": [
        {"instanceArn": arn + I2, "accountId": ACCOUNT, "currentInstanceType": "m5.large", "finding": "Optimized",
         "recommendationOptions": []}],
        "errors": [{"identifier": arn + "i-0aaaaaaaaaaaaaaaa", "code": "AccessDenied", "message": "no metrics"}]},
        {"nextToken": "t2"})
    stubber.add_response("get_ebs_volume_recommendations", {"volumeRecommendations": [
        {"volumeArn": f"arn:aws:ec2:eu-west-1:{ACCOUNT}:volume/{V1}", "accountId": ACCOUNT, "finding": "NotOptimized",
         "currentConfiguration": {"volumeType": "gp2", "volumeSize": 100},
         "volumeRecommendationOptions": [{"configuration": {"volumeType": "gp3", "volumeSize": 100,
                                                            "volumeBaselineIOPS": 3000,
                                                            "volumeBaselineThroughput": 125},
                                          "rank": 1, **saving(2.0)}]}]}, {})
    stubber.add_response("get_lambda_function_recommendations", {"lambdaFunctionRecommendations": [
        {"functionArn": f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:thumbs:$LATEST", "functionVersion": "$LATEST",
         "accountId": ACCOUNT, "currentMemorySize": 2048, "finding": "NotOptimized",
         "memorySizeRecommendationOptions": [{"rank": 1, "memorySize": 1024, **saving(4.0)}]}]}, {})
    stubber.add_response("get_rds_database_recommendations", {"rdsDBRecommendations": [
        {"resourceArn": f"arn:aws:rds:eu-west-1:{ACCOUNT}:db:orders", "accountId": ACCOUNT,
         "currentDBInstanceClass": "db.r5.2xlarge", "instanceFinding": "Overprovisioned",
         "instanceRecommendationOptions": [{"dbInstanceClass": "db.r5.xlarge", "rank": 1, **saving(150.0)}]}]}, {})
    stubber.add_response("get_idle_recommendations", {"idleRecommendations": [
        {"resourceArn": f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/{I2}", "resourceId": I2,
         "resourceType": "EC2Instance", "accountId": ACCOUNT, "finding": "Idle", **saving(40.0)},
        {"resourceArn": f"arn:aws:ec2:eu-west-1:{ACCOUNT}:natgateway/nat-0123", "resourceId": "nat-0123",
         "resourceType": "NatGateway", "accountId": ACCOUNT, "finding": "Unused", **saving(30.0)}]}, {})


def test_compute_optimizer_every_list_pages_into_kinds(sessions: SessionFactory, stub: Any) -> None:
    stub_compute_optimizer(stub("eu-west-1", "compute-optimizer"))
    report = import_live(sessions, COMPUTE_OPTIMIZER, SourceFilters(regions=["eu-west-1"]), CTX)
    assert report.imported_by_kind == {"ebs.gp2_to_gp3": 1, "ec2.rightsize": 1, "ec2.stop": 1,
                                       "lambda.memory": 1, "rds.rightsize": 1}
    lam = next(r for r in report.recommendations if r.kind == "lambda.memory")
    assert (lam.resource_id, lam.params) == ("thumbs", {"expected_memory_mb": 2048, "target_memory_mb": 1024})
    assert {(n.action_type, n.resource_type) for n in report.not_executable} == {
        ("Rightsize/Optimized", "Ec2Instance"), ("Idle/Unused", "NatGateway"),
        ("error/AccessDenied", "instanceRecommendations")}


def test_compute_optimizer_needs_a_region(sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SourceError, match="regional"):
        import_live(sessions, COMPUTE_OPTIMIZER, SourceFilters(), CTX, default_region=None)


# ---- Trusted Advisor ------------------------------------------------------------------------------

TA_REC = f"arn:aws:trustedadvisor::{ACCOUNT}:recommendation/"


def check(check_id: str, name: str) -> dict[str, Any]:
    return {"id": check_id, "arn": f"arn:aws:trustedadvisor:::check/{check_id}", "name": name, "description": "d",
            "pillars": ["cost_optimizing"], "awsServices": ["EC2"], "source": "ta_check",
            "metadata": {"0": "Region", "1": "Resource", "2": "Estimated Monthly Savings"}}


def ta_rec(rec_id: str, check_id: str, name: str) -> dict[str, Any]:
    return {"id": rec_id, "type": "standard", "checkArn": f"arn:aws:trustedadvisor:::check/{check_id}",
            "status": "warning", "pillars": ["cost_optimizing"], "source": "ta_check", "name": name,
            "resourcesAggregates": {"okCount": 0, "warningCount": 2, "errorCount": 0}, "arn": TA_REC + rec_id,
            "lifecycleStage": "pending_response"}


def ta_resource(rec_id: str, rid: str, status: str = "warning", region: str = "eu-west-1") -> dict[str, Any]:
    return {"id": f"res-{rid}", "arn": f"{TA_REC}{rec_id}/resource/{rid}", "awsResourceId": rid,
            "regionCode": region, "status": status, "metadata": {"0": region, "1": rid, "2": "$9.50"},
            "lastUpdatedAt": WHEN, "recommendationArn": TA_REC + rec_id, "exclusionStatus": "included"}


def test_trusted_advisor_cost_checks_and_their_resources(sessions: SessionFactory, stub: Any) -> None:
    stubber = stub("us-east-1", "trustedadvisor")
    stubber.add_response("list_checks", {"checkSummaries": [
        check("Qch7DwouX1", "Low Utilization Amazon EC2 Instances"), check("hjLMh88uM8", "Idle Load Balancers")]},
        {"pillar": "cost_optimizing", "language": "en"})
    stubber.add_response("list_recommendations", {"recommendationSummaries": [
        ta_rec("r-ec2", "Qch7DwouX1", "Low Utilization Amazon EC2 Instances"),
        ta_rec("r-elb", "hjLMh88uM8", "Idle Load Balancers")]}, {"pillar": "cost_optimizing"})
    stubber.add_response("list_recommendation_resources", {"recommendationResourceSummaries": [
        ta_resource("r-ec2", I1), ta_resource("r-ec2", I2, status="ok")], "nextToken": "page-2"},
        {"recommendationIdentifier": TA_REC + "r-ec2"})
    stubber.add_response("list_recommendation_resources", {"recommendationResourceSummaries": [
        ta_resource("r-ec2", "i-0bbbbbbbbbbbbbbbb", region="us-west-2")]},
        {"recommendationIdentifier": TA_REC + "r-ec2", "nextToken": "page-2"})
    stubber.add_response("list_recommendation_resources", {"recommendationResourceSummaries": [
        ta_resource("r-elb", "my-elb")]}, {"recommendationIdentifier": TA_REC + "r-elb"})
    report = import_live(sessions, TRUSTED_ADVISOR, SourceFilters(regions=["eu-west-1"]), CTX)
    assert [(r.kind, r.resource_id, r.region, r.estimated_monthly_savings) for r in report.recommendations] == [
        ("ec2.stop", I1, "eu-west-1", 9.5)]
    assert [(n.resource_type, n.count) for n in report.not_executable] == [("Idle Load Balancers", 1)]


# ---- the command ----------------------------------------------------------------------------------


def reclaim(*args: str, env: dict[str, str] | None = None) -> Any:
    from starter.cli import app

    return CliRunner().invoke(app, list(args), env=env)


def test_import_from_a_saved_file_prints_the_report(tmp_path: Path) -> None:
    saved = tmp_path / "recs.json"
    items = [hub_item(I1, "Stop", "Ec2Instance"), hub_item("sp-1", "PurchaseSavingsPlans", "ComputeSavingsPlans"),
             hub_item("sp-2", "PurchaseSavingsPlans", "ComputeSavingsPlans")]
    saved.write_text(json.dumps({"items": items}, default=str))
    result = reclaim("import", "--from", "file", "--file", str(saved), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [r["kind"] for r in data["recommendations"]] == ["ec2.stop"] and data["saved"] is False
    assert [(n["action_type"], n["count"]) for n in data["not_executable"]] == [("PurchaseSavingsPlans", 2)]
    text = reclaim("import", "--from", "file", "--file", str(saved))
    assert "1 recommendation imported" in text.output and "PurchaseSavingsPlans" in text.output


def test_the_source_can_be_named_first_and_its_saved_output_given_with_file(tmp_path: Path) -> None:
    """`reclaim import coh --file recs.json` (the issue's form) is the same import as `--from file`."""
    saved = tmp_path / "recs.json"
    saved.write_text(json.dumps({"items": [hub_item(I1, "Stop", "Ec2Instance")]}, default=str))
    named = reclaim("import", "coh", "--file", str(saved), "--accounts", ACCOUNT, "--json")
    assert named.exit_code == 0, named.output
    assert json.loads(named.output)["recommendations"] == json.loads(
        reclaim("import", "--from", "file", "--file", str(saved), "--account", ACCOUNT, "--json").output)["recommendations"]
    for args, says in ((["import"], "say where"), (["import", "coh", "--from", "ta"], "say one source")):
        refused = reclaim(*args)
        assert refused.exit_code == 2 and says in refused.output


def test_import_save_keeps_them_in_the_read_model(tmp_path: Path) -> None:
    import asyncio

    from store.repository import Store

    saved = tmp_path / "recs.json"
    saved.write_text(json.dumps({"items": [hub_item(I1, "Stop", "Ec2Instance")]}, default=str))
    url = f"sqlite+aiosqlite:///{tmp_path / 'reclaim.db'}"
    env = {"DATABASE_URL": url, "RECLAIM_API_URL": "", "RECLAIM_API_TOKEN": ""}
    for _ in range(2):  # a re-import replaces, never duplicates
        result = reclaim("import", "--from", "file", "--file", str(saved), "--customer", "acme", "--save", env=env)
        assert result.exit_code == 0, result.output

    async def stored() -> list[Any]:
        store = await Store.open(url)
        try:
            return [await store.get_recommendation(f"coh-rec-{I1}")]
        finally:
            await store.close()

    [rec] = asyncio.run(stored())
    assert rec is not None and rec.kind == "ec2.stop" and rec.customer_id == "acme"
    assert rec.source == COH and rec.source_id == f"rec-{I1}"


def test_import_live_through_the_command(monkeypatch: pytest.MonkeyPatch, sessions: SessionFactory,
                                         stub: Any) -> None:
    import starter.import_cli as import_cli

    stub_hub(stub("us-east-1", "cost-optimization-hub"))
    monkeypatch.setattr(import_cli, "session_factory", lambda settings: sessions)
    result = reclaim("import", "--from", "coh", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(r["kind"] for r in json.loads(result.output)["recommendations"]) == ["ebs.gp2_to_gp3",
                                                                                      "ec2.rightsize"]


@pytest.mark.parametrize(("args", "message"), [
    (["--from", "file"], "needs --file"),
    (["--from", "file", "--file", "/nonexistent/recs.json"], "no such file"),
    (["--from", "coh", "--file", "x.json"], "x.json: no such file"),  # a named source's saved output
    (["--from", "file", "--file", "{bad}", "--customer", "no spaces allowed"], "customer_id"),
])
def test_import_errors_are_one_line_without_traceback(args: list[str], message: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Reservations": []}))
    result = reclaim("import", *[str(bad) if a == "{bad}" else a for a in args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_an_unrecognised_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Reservations": []}))
    result = reclaim("import", "--from", "file", "--file", str(bad))
    assert result.exit_code == 1 and "not the output of" in result.output


def test_access_denied_through_the_command(monkeypatch: pytest.MonkeyPatch, sessions: SessionFactory,
                                           stub: Any) -> None:
    import starter.import_cli as import_cli

    stub("us-east-1", "cost-optimization-hub").add_client_error(
        "list_recommendations", service_error_code="AccessDeniedException", http_status_code=403,
        service_message="not enrolled")
    monkeypatch.setattr(import_cli, "session_factory", lambda settings: sessions)
    result = reclaim("import", "--from", "coh")
    assert result.exit_code == 1 and "AccessDeniedException: not enrolled" in result.output
