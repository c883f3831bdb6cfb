"""The accounts file, its loader and rules, discovery, the check and the IAM policy (no Temporal)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto.core.authorization import enable_iam_authentication
from moto.sts.models import sts_backends
from typer.testing import CliRunner

from activities.accounts import AccountsFileError, AccountsSource, parse_accounts_file
from activities.aws import SessionFactory, current_session_name
from activities.iam import permissions, policy_document
from domain.execution import ExecutionRequest
from domain.policy import Policy
from domain.recommendation import Recommendation
from starter.cli import app
from starter.executions import AccountRefused, admitted
from tests.helpers import recommendation

GOOD = """\
defaults:
  role_arn: arn:aws:iam::{account_id}:role/ReclaimExecutor
  external_id: env:TEST_RECLAIM_EXTERNAL_ID
  regions: [us-east-1, eu-west-1]
accounts:
  - id: "111111111111"
    name: shop-prod
    customer: acme
    kinds: [ec2.stop]
    policy: {auto_approve_max_monthly_savings: 0, refuse_production: false, cooldown_days: 14}
  - id: "222222222222"
    name: shop-dev
    customer: acme
    enabled: false
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(AccountsFileError) as caught:
        parse_accounts_file(text, "accounts.yaml")
    return caught.value.problems


def test_a_good_file_loads_with_its_defaults() -> None:
    accounts = parse_accounts_file(GOOD)
    prod, dev = accounts.accounts
    assert accounts.role_arn(prod) == "arn:aws:iam::111111111111:role/ReclaimExecutor"
    assert accounts.external_id(dev) == "env:TEST_RECLAIM_EXTERNAL_ID"
    assert accounts.regions(dev) == ["us-east-1", "eu-west-1"]
    assert accounts.kinds(prod) == ["ec2.stop"] and accounts.kinds(dev) is None
    assert not dev.enabled and prod.enabled


@pytest.mark.parametrize(("text", "expected"), [
    ("accounts:\n  - id: 111111111111\n    name: a\n    customer: acme\n",
     "accounts.yaml:2: accounts[0].id: an account id is 12 digits in quotes"),
    ("accounts:\n  - id: '111111111111'\n    name: a\n    customer: acme\n    enabled: maybe\n",
     "accounts.yaml:5: accounts[0].enabled: Input should be a valid boolean"),
    ("accounts:\n  - id: '111111111111'\n    name: a\n    customer: acme\n    external_id: AKIAABCDEFGHIJKLMNOP\n",
     "accounts.yaml:5: accounts[0].external_id: looks like a secret"),
    ("accounts:\n  - id: '111111111111'\n    name: a\n    customer: acme\n    external_id: plain-value-123\n",
     "accounts.yaml:5: accounts[0].external_id: a secret must be a reference, env:NAME or file:/absolute/path"),
    ("accounts:\n  - id: '111111111111'\n    name: a\n    customer: acme\n    policy: {cooldown_days: -1}\n",
     "accounts.yaml:5: accounts[0].policy.cooldown_days: Input should be greater than or equal to 0"),
    ("accounts:\n  - id: '111111111111'\n    name: a\n    customer: acme\n    kinds: [ec2.stop, ec2.stopp]\n",
     "accounts.yaml:5: accounts[0].kinds[1]: unknown action kind 'ec2.stopp'"),
    ("accounts:\n  - id: '111111111111'\n    name: a\n    customer: acme\n"
     "    role_arn: arn:aws:iam::333333333333:role/R\n",
     "accounts.yaml:5: accounts[0].role_arn: the role is in account 333333333333, not in 111111111111"),
    ("accounts:\n  - {id: '111111111111', name: a, customer: acme}\n  - {id: '111111111111', name: b, customer: acme}\n",
     "accounts.yaml:3: accounts[1].id: account 111111111111 is listed twice (also accounts[0])"),
    ("accounts:\n  - id: '111111111111'\n    customer: acme\n", "accounts.yaml:2: accounts[0].name: Field required"),
    ("accounts: [\n", "accounts.yaml:2: not valid YAML"),
    ("- a\n- b\n", "accounts.yaml:1: expected a mapping"),
])
def test_every_problem_names_its_line_and_field(text: str, expected: str) -> None:
    problems = _problems(text)
    assert any(p.startswith(expected) for p in problems), problems
    assert not any("AKIAABCDEFGHIJKLMNOP" in p for p in problems)  # a secret is never repeated


def test_the_source_reads_the_file_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(GOOD)
    source = AccountsSource(path)
    assert source() is source()  # unchanged: not read again
    path.write_text(GOOD.replace("enabled: false", "enabled: true      "))
    assert all(a.enabled for a in source().accounts)


def _rec(kind: str, resource_id: str, **fields: Any) -> Recommendation:
    return recommendation(kind, resource_id).model_copy(update=fields)


def _request(account: str, **fields: Any) -> ExecutionRequest:
    rec = _rec("ec2.stop", "i-0123456789abcdef0", account_id=account, **fields)
    return ExecutionRequest(recommendation=rec, requested_by="alice", policy=Policy())


def test_the_edge_refuses_and_applies_the_overrides() -> None:
    accounts = parse_accounts_file(GOOD)
    lookup = lambda: accounts  # noqa: E731
    with pytest.raises(AccountRefused, match=r"account 222222222222 \(shop-dev\) is disabled"):
        admitted(lookup, _request("222222222222"))
    with pytest.raises(AccountRefused, match="not in the accounts file"):
        admitted(lookup, _request("333333333333"))
    with pytest.raises(AccountRefused, match="belongs to customer acme, not globex"):
        admitted(lookup, _request("111111111111", customer_id="globex"))
    with pytest.raises(AccountRefused, match="region ap-south-1 is not one of"):
        admitted(lookup, _request("111111111111", region="ap-south-1"))
    rec = _rec("ebs.gp2_to_gp3", "vol-0123456789abcdef0", account_id="111111111111")
    with pytest.raises(AccountRefused, match=r"ebs\.gp2_to_gp3 is not allowed in account 111111111111"):
        admitted(lookup, ExecutionRequest(recommendation=rec, requested_by="alice"))
    policy = admitted(lookup, _request("111111111111")).policy
    assert (policy.auto_approve_max_monthly_savings, policy.refuse_production, policy.cooldown_days) == (0, False, 14)
    assert policy.production_tags == Policy().production_tags  # what the account does not override stays
    assert admitted(None, _request("333333333333")).policy == Policy()  # no file: any account, as before


def test_session_names_are_what_sts_accepts() -> None:
    assert current_session_name("reclaim") == "reclaim"  # outside an activity
    assert current_session_name("a b/c") == "a-b-c"
    long = current_session_name("x" * 100)
    assert len(long) == 64 and long != current_session_name("x" * 99)


# ---- STS, on moto ----------------------------------------------------------------------------


@pytest.fixture
def external_id() -> Iterator[str]:
    os.environ["TEST_RECLAIM_EXTERNAL_ID"] = "reclaim-ext-7f3a"
    yield "reclaim-ext-7f3a"
    os.environ.pop("TEST_RECLAIM_EXTERNAL_ID", None)


def _assumed(account: str) -> list[Any]:
    return list(sts_backends[account]["aws"].assumed_roles)


def test_credentials_are_cached_per_session_and_refreshed_before_expiry(moto_endpoint: str, external_id: str) -> None:
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10)
    now = [datetime.now(UTC)]
    sessions = SessionFactory(endpoint_url=moto_endpoint, accounts=lambda: parse_accounts_file(GOOD),
                              clock=lambda: now[0])
    ec2 = sessions.client("111111111111", "us-east-1", "ec2")
    for _ in range(3):
        ec2.describe_instances()
    sessions.client("111111111111", "eu-west-1", "ec2").describe_instances()
    assert [(r.session_name, r.external_id) for r in _assumed("111111111111")] == [("reclaim", external_id)]
    now[0] += timedelta(minutes=44)  # an hour's credentials, 16 minutes left: still used
    ec2.describe_instances()
    assert len(_assumed("111111111111")) == 1
    now[0] += timedelta(minutes=2)  # within botocore's 15-minute advisory refresh: assumed again
    ec2.describe_instances()
    assert len(_assumed("111111111111")) == 2
    assert sessions.credentials("111111111111", "exec-a") is not sessions.credentials("111111111111", "exec-b")
    assert sorted(r.session_name for r in _assumed("111111111111")) == ["exec-a", "exec-b", "reclaim", "reclaim"]
    assert _assumed("222222222222") == []  # nothing asked there, nothing assumed there


# ---- discover, check, list, iam policy (the CLI) -----------------------------------------------


def _cli(args: list[str], **env: str) -> Any:
    result = CliRunner().invoke(app, args, env=env)
    return result


def test_discover_appends_the_organizations_new_accounts_disabled(moto_endpoint: str, tmp_path: Path) -> None:
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10)
    org = boto3.client("organizations", endpoint_url=moto_endpoint, region_name="us-east-1")
    org.create_organization(FeatureSet="ALL")
    created = {}
    for name in ("payments", "search", "sandbox"):
        status = org.create_account(Email=f"{name}@example.com", AccountName=name)["CreateAccountStatus"]
        created[name] = status["AccountId"]
    org.tag_resource(ResourceId=created["payments"], Tags=[{"Key": "customer", "Value": "globex"}])
    master = org.describe_organization()["Organization"]["MasterAccountId"]
    path = tmp_path / "accounts.yaml"
    path.write_text(f"# our accounts\naccounts:\n  - id: \"{created['search']}\"  # reviewed\n"
                    "    name: search\n    customer: acme\n")
    env = {"RECLAIM_ACCOUNTS_FILE": str(path), "AWS_ENDPOINT_URL": moto_endpoint}

    result = _cli(["accounts", "discover", "--customer", "acme"], **env)
    assert result.exit_code == 0, result.output
    assert "wrote 3 accounts" in result.output
    text = path.read_text()
    assert text.startswith("# our accounts\n") and "# reviewed" in text  # the reviewed part kept as written
    accounts = parse_accounts_file(text)
    found = {a.id: a for a in accounts.accounts}
    assert set(found) == {*created.values(), master}
    assert found[created["search"]].enabled  # untouched
    assert [a.enabled for i, a in found.items() if i != created["search"]] == [False] * 3  # never enabled
    assert found[created["payments"]].customer == "globex" and found[created["sandbox"]].customer == "acme"

    again = _cli(["accounts", "discover"], **env)
    assert again.exit_code == 0 and "nothing new" in again.output
    listed = _cli(["accounts", "list"], **env)
    assert listed.exit_code == 0, listed.output
    assert "4 accounts, 1 enabled, 3 disabled" in listed.output
    as_json = json.loads(_cli(["accounts", "list", "--json"], **env).output)
    assert {row["id"]: row["state"] for row in as_json}[created["sandbox"]] == "disabled"

    fresh = tmp_path / "new.yaml"  # no file yet: a whole one, with defaults
    result = _cli(["accounts", "discover", "--out", str(fresh), "--region", "eu-west-1"], **env)
    assert result.exit_code == 0, result.output
    new = parse_accounts_file(fresh.read_text())
    assert new.defaults.regions == ["eu-west-1"] and not any(a.enabled for a in new.accounts)


def test_a_malformed_file_is_one_line_naming_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text("accounts:\n  - id: '111111111111'\n    name: a\n    customer: acme\n    enabled: maybe\n")
    result = _cli(["accounts", "list"], RECLAIM_ACCOUNTS_FILE=str(path))
    assert result.exit_code == 1
    assert f"{path}:5: accounts[0].enabled" in " ".join(result.output.split())


def test_iam_policy_is_the_registrys_permissions(tmp_path: Path) -> None:
    result = _cli(["iam", "policy", "--kinds", "ec2.stop,ebs.gp2_to_gp3"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    allowed = {a for s in document["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert allowed == {"ec2:DescribeInstances", "ec2:StopInstances", "ec2:StartInstances", "ec2:DescribeVolumes",
                       "ec2:DescribeVolumesModifications", "ec2:ModifyVolume", "sts:GetCallerIdentity",
                       "cloudwatch:GetMetricData", "cloudwatch:ListMetrics",
                       # the worker's own reads: SSM windows and calendars, the savings check
                       "ssm:DescribeMaintenanceWindows", "ssm:GetMaintenanceWindow", "ssm:GetCalendarState",
                       "ce:GetCostAndUsage", "ce:GetCostAndUsageWithResources"}
    every = json.loads(_cli(["iam", "policy"]).output)
    allowed_all = {a for s in every["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert set(permissions()) <= allowed_all
    pass_role = next(s for s in every["Statement"] if s["Action"] == "iam:PassRole")
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    assert _cli(["iam", "policy", "--kinds", "ec2.nope"]).exit_code == 1
    trust = json.loads(_cli(["iam", "policy", "--trust", "arn:aws:iam::123456789012:role/worker"]).output)
    assert trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"]


def _role(account: str, document: dict[str, Any]) -> None:
    """A ReclaimExecutor role in `account` allowed exactly `document`."""
    sts = boto3.client("sts", region_name="us-east-1", endpoint_url=os.environ["_TEST_MOTO"])
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole",
                            RoleSessionName="setup")["Credentials"]
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=os.environ["_TEST_MOTO"],
                       aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                       aws_session_token=creds["SessionToken"])
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:user/worker"}, "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName="ReclaimExecutor", AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName="ReclaimExecutor", PolicyName="reclaim", PolicyDocument=json.dumps(document))


def test_check_says_exactly_what_is_missing_under_iam(moto_endpoint: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, external_id: str) -> None:
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10)
    monkeypatch.setenv("_TEST_MOTO", moto_endpoint)
    full = policy_document(["ec2.stop"])  # the generated policy: enough
    _role("111111111111", full)
    short = json.loads(json.dumps(full))
    short["Statement"][0]["Action"].remove("ec2:StopInstances")
    _role("222222222222", short)
    _role("333333333333", full)
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=moto_endpoint)
    iam.create_user(UserName="worker")
    roles = [f"arn:aws:iam::{a}:role/ReclaimExecutor" for a in ("111111111111", "222222222222")]  # not 333...
    iam.put_user_policy(UserName="worker", PolicyName="assume", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": roles}]}))
    key = iam.create_access_key(UserName="worker")["AccessKey"]
    path = tmp_path / "accounts.yaml"
    path.write_text(GOOD.replace("    enabled: false\n", "    kinds: [ec2.stop]\n")
                    + "  - {id: '333333333333', name: shop-qa, customer: acme, kinds: [ec2.stop]}\n")
    env = {"RECLAIM_ACCOUNTS_FILE": str(path), "AWS_ENDPOINT_URL": moto_endpoint, "RECLAIM_USER": "carol",
           "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN")  # the worker user's own keys, not a session's
    with enable_iam_authentication():
        result = _cli(["accounts", "check", "--region", "us-east-1", "--json"])
        table = _cli(["accounts", "check", "--account", "222222222222"])
    assert result.exit_code == 4, result.output
    rows = {row["account_id"]: row for row in json.loads(result.output)}
    assert rows["111111111111"]["ok"] and rows["111111111111"]["missing"] == []
    assert rows["111111111111"]["assumed"].endswith(":assumed-role/ReclaimExecutor/reclaim-check-carol")
    assert rows["222222222222"]["missing"] == ["ec2:StopInstances"] and not rows["222222222222"]["ok"]
    assert rows["333333333333"]["assumed"].startswith("cannot assume arn:aws:iam::333333333333:role/ReclaimExecutor")
    assert "AccessDenied" in rows["333333333333"]["assumed"]
    assert [r.external_id for r in _assumed("111111111111") if r.session_name == "reclaim-check-carol"] == [external_id]
    assert table.exit_code == 4 and "ec2:StopInstances" in table.output and "eu-west-1" in table.output
