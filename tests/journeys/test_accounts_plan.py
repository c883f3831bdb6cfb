"""Across an organization, on the dev server and moto: 20 accounts x 2 regions in one plan, each
call in its own account under its execution's STS session; a disabled account refused at the edge
(Executions.start, plans, the API); the account's policy overrides applied at start."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.sts.models import sts_backends

from activities.accounts import AccountsSource
from activities.aws import SessionFactory
from activities.faults import FaultInjector
from domain.execution import ExecutionRequest, ExecutionView, execution_id_for
from domain.plan import PlanSpec, PlanStatus
from domain.policy import Policy, Role
from domain.recommendation import Recommendation
from domain.status import ExecutionStatus as S
from runtime.settings import Settings
from starter.api.app import create_app
from starter.api.auth import TokenEntry, TokenStore
from starter.api.deps import Services
from starter.executions import AccountRefused, Executions
from starter.plans import Plans
from tests.conftest import AwsAccount, Stack
from tests.test_plans import FAST

ACCOUNTS = [f"{100000000000 + i * 1111:012d}" for i in range(1, 21)]
REGIONS = ["us-east-1", "eu-west-1"]
DISABLED = "999999999999"
EXTERNAL = "reclaim-ext-plan-4b1d"


@pytest.fixture(scope="module")
def accounts_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    os.environ["TEST_PLAN_EXTERNAL_ID"] = EXTERNAL
    path = tmp_path_factory.mktemp("accounts") / "accounts.yaml"
    lines = ["defaults:", "  role_arn: arn:aws:iam::{account_id}:role/ReclaimExecutor",
             "  external_id: env:TEST_PLAN_EXTERNAL_ID", f"  regions: [{', '.join(REGIONS)}]", "accounts:"]
    lines += [f'  - {{id: "{a}", name: shop-{i}, customer: acme}}' for i, a in enumerate(ACCOUNTS)]
    lines += [f'  - {{id: "{DISABLED}", name: frozen, customer: acme, enabled: false}}',
              '  - {id: "123456789012", name: strict, customer: acme, role_arn: '
              '"arn:aws:iam::123456789012:role/ReclaimExecutor", policy: {auto_approve_max_monthly_savings: 10}}']
    path.write_text("\n".join(lines) + "\n")
    yield path
    os.environ.pop("TEST_PLAN_EXTERNAL_ID", None)


class Calls:
    """Every request the worker sends: the account its session is for, and the key that signed it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def install(self, session: boto3.Session) -> None:
        account = str(getattr(session.get_credentials(), "account_id", "") or "default")

        def record(request: Any, **_: Any) -> None:
            auth = request.headers.get("Authorization", b"")
            auth = auth.decode() if isinstance(auth, bytes) else auth
            self.seen.append((account, session.region_name, auth.split("Credential=")[1].split("/")[0]))

        session.events.register("before-send", record)


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def sessions(moto_endpoint: str, faults: FaultInjector, accounts_file: Path, calls: Calls) -> SessionFactory:
    return SessionFactory(endpoint_url=moto_endpoint, session_hooks=[faults.install, calls.install],
                          accounts=AccountsSource(accounts_file))


def _seed(endpoint: str, account: str, region: str) -> str:
    """One running instance in `account`/`region`, made the operator's way (an assumed role there)."""
    creds = boto3.client("sts", region_name=region, endpoint_url=endpoint).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole", RoleSessionName="seed")["Credentials"]
    ec2 = boto3.client("ec2", region_name=region, endpoint_url=endpoint, aws_access_key_id=creds["AccessKeyId"],
                       aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])
    # moto does not validate AMIs by default, and listing its own costs seconds per new account and region.
    return str(ec2.run_instances(ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1, InstanceType="m5.large")["Instances"][0]["InstanceId"])


def _instances(endpoint: str, account: str, region: str) -> dict[str, str]:
    creds = boto3.client("sts", region_name=region, endpoint_url=endpoint).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole", RoleSessionName="look")["Credentials"]
    ec2 = boto3.client("ec2", region_name=region, endpoint_url=endpoint, aws_access_key_id=creds["AccessKeyId"],
                       aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])
    return {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}


def _rec(account: str, region: str, resource_id: str, savings: float = 50.0) -> Recommendation:
    return Recommendation(id=f"rec-{uuid.uuid4().hex[:12]}", customer_id="acme", account_id=account, region=region,
                          kind="ec2.stop", resource_id=resource_id, params={"expected_instance_type": "m5.large"},
                          estimated_monthly_savings=savings)


def _accounts_of_key(account_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Access key id -> (account, session name), from what moto's STS handed out."""
    return {r.access_key_id: (account, r.session_name)
            for account in account_ids for r in sts_backends[account]["aws"].assumed_roles}


async def test_one_plan_across_20_accounts_and_2_regions(stack: Stack, aws: AwsAccount, calls: Calls,
                                                         accounts_file: Path) -> None:
    where = {(a, r): _seed(aws.endpoint, a, r) for a in ACCOUNTS for r in REGIONS}
    recs = [_rec(a, r, i) for (a, r), i in where.items()]
    plans = Plans(stack.client, stack.task_queue, stack.store, accounts=AccountsSource(accounts_file))
    spec = PlanSpec.model_validate({"recommendations": [r.model_dump(mode="json") for r in recs],
                                    "strategy": "parallel", "options": FAST})
    view = await plans.submit(spec, requested_by="alice")
    done = await plans.wait(view.plan_id, timeout=180)
    assert done.status is PlanStatus.COMPLETED, done.reason
    assert done.counts == {S.COMPLETED.value: 40}

    # Each account and region holds its one instance, stopped; nothing else anywhere.
    for (account, region), instance in where.items():
        assert _instances(aws.endpoint, account, region) == {instance: "stopped"}
    assert aws.ec2.describe_instances()["Reservations"] == []  # the worker's own account: untouched

    # Every request was signed by a key of the account it was meant for, under its execution's session.
    keys = _accounts_of_key([*ACCOUNTS, DISABLED, "123456789012"])
    executions = {execution_id_for(r.id): r.account_id for r in recs}
    assert calls.seen
    for account, region, key in calls.seen:
        signer, name = keys[key]
        assert signer == account, (account, region, name)
        assert name == "reclaim" or executions[name] == account  # "reclaim": the gateway's shared calls
    by_name = {name for account, _, key in calls.seen for name in [keys[key][1]] if name != "reclaim"}
    assert by_name == set(executions)  # each execution made calls as itself
    for account in ACCOUNTS:
        assumed = sts_backends[account]["aws"].assumed_roles
        names = {r.session_name for r in assumed if r.session_name not in ("seed", "look")}
        assert names - {"reclaim"} == {e for e, a in executions.items() if a == account}
        assert {r.external_id for r in assumed if r.session_name not in ("seed", "look")} == {EXTERNAL}
    assert sts_backends[DISABLED]["aws"].assumed_roles == []

    # Credentials never enter a history.
    secrets = [v for account in ACCOUNTS for r in sts_backends[account]["aws"].assumed_roles
               for v in (r.secret_access_key, r.session_token)]
    for execution_id in list(executions)[:4]:
        history = json.dumps((await stack.client.get_workflow_handle(execution_id).fetch_history()).to_json_dict())
        assert not any(secret in history for secret in secrets)


async def test_a_disabled_account_is_refused_at_the_edge_and_overrides_apply(
        stack: Stack, aws: AwsAccount, accounts_file: Path) -> None:
    source = AccountsSource(accounts_file)
    executions = Executions(stack.client, stack.task_queue, accounts=source)
    frozen = _rec(DISABLED, "us-east-1", "i-0123456789abcdef0")
    for dry_run in (False, True):
        request = ExecutionRequest.model_validate({"recommendation": frozen.model_dump(mode="json"),
                                                   "requested_by": "alice", "options": {"dry_run": dry_run}})
        with pytest.raises(AccountRefused, match=r"account 999999999999 \(frozen\) is disabled"):
            await executions.start(request)
    assert not await executions._exists(execution_id_for(frozen.id))
    plans = Plans(stack.client, stack.task_queue, stack.store, accounts=source)
    spec = PlanSpec.model_validate({"recommendations": [frozen.model_dump(mode="json")], "options": FAST})
    with pytest.raises(AccountRefused, match="1 of the plan's items are refused"):
        await plans.submit(spec, requested_by="alice")

    # The API: 409 with the reason; nothing stored.
    token = "acme-operator-token-accounts-01"
    app = create_app(Services(settings=Settings(), executions=executions, store=stack.store,
                              tokens=TokenStore([TokenEntry(subject="op", role=Role.OPERATOR, customers=["acme"],
                                                            token=token)])))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as http:
        answer = await http.post("/api/v1/executions/execute", headers={"Authorization": f"Bearer {token}"},
                                 json={"recommendation": frozen.model_dump(mode="json", exclude_none=True)})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == "account_refused" and "is disabled" in str(answer.json()["detail"])
    assert await stack.store.get_recommendation(frozen.id) is None

    # "strict" (the moto account) overrides the threshold to $10: a $50 stop waits for a person,
    # where the deployment's policy would have auto-approved it.
    instance = aws.instance("m5.large")
    strict = _rec("123456789012", "us-east-1", instance)
    started = await executions.start(ExecutionRequest(recommendation=strict, requested_by="alice", policy=Policy()))
    view: ExecutionView = await executions.wait(started.execution_id, timeout=120)
    assert view.status is S.AWAITING_APPROVAL, view.reason
    assert "savings exceed the auto-approval threshold" in " ".join(view.approval_reasons)
