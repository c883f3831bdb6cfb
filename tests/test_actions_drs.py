"""drs.drill against botocore's Stubber (moto has no DRS): exact call sequences with responses the
service model validates (job PENDING -> STARTED -> COMPLETED, a launch FAILED with its reason,
ThrottlingException), and the stateful FakeDrs (tests/drs_fake.py) for revert, cleanup and retries;
EC2 status checks from moto. Clients come through SessionFactory, the seam the worker uses."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from activities.actions.base import BACKUP_TAG
from activities.actions.drs_drill import DrillParams, DrsDrill, Probe, probe_problem
from activities.aws import SessionFactory
from activities.errors import InProgress, Refused, VerificationFailed, to_application_error
from domain.execution import BackupRecord, StepLogEntry
from domain.plan import PlanView, RateControl, Strategy, WaveMode, WaveProgress
from domain.plan_report import ReportItem, build_report, render_markdown
from domain.policy import Policy, approval_requirement, assess_risk
from domain.recommendation import Recommendation
from domain.recovery import launch_window
from domain.status import ExecutionStatus
from tests.drs_fake import FakeDrs, server_id
from tests.kinds_support import ACCOUNT, REGION, build_action, converge, moto_account

S1, S2 = server_id(1), server_id(2)
JOB = "drsjob-00000000000000042"
I1, I2 = "i-0123456789abcdef0", "i-0fedcba9876543210"
EXEC = "exec-drill-1"


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> Iterator[SessionFactory]:
    with moto_account(monkeypatch):
        yield SessionFactory()


def drill(sessions: SessionFactory, *servers: str, execution_id: str = EXEC, **params: Any) -> DrsDrill:
    action = build_action(sessions, "drs.drill", servers[0], {"source_server_ids": list(servers),
                                                             "poll_interval_seconds": 0, **params},
                          execution_id=execution_id, savings=0.0)
    assert isinstance(action, DrsDrill)
    return action


def backup_of(*servers: str) -> BackupRecord:
    return BackupRecord(kind="drs.drill", resource_id=servers[0],
                        data={"jobs_since": "2026-12-01T00:00:00Z", "source_server_ids": list(servers)})


def job(status: str, servers: dict[str, tuple[str, str | None]], **extra: Any) -> dict[str, Any]:
    return {"jobID": JOB, "type": "LAUNCH", "initiatedBy": "START_DRILL", "status": status,
            "creationDateTime": "2026-12-01T10:00:00Z", "tags": {BACKUP_TAG: EXEC},
            "participatingServers": [{"sourceServerID": sid, "launchStatus": st,
                                      **({"recoveryInstanceID": iid} if iid else {})}
                                     for sid, (st, iid) in servers.items()], **extra}


def source(sid: str, **extra: Any) -> dict[str, Any]:
    return {"sourceServerID": sid, "tags": {"team": "web"}, "replicationDirection": "FAILOVER",
            "dataReplicationInfo": {"dataReplicationState": "CONTINUOUS"}, "lastLaunchResult": "NOT_STARTED", **extra}


@pytest.fixture
def stub(sessions: SessionFactory) -> Iterator[Stubber]:
    stubber = Stubber(sessions.client(ACCOUNT, REGION, "drs"))
    stubber.activate()
    yield stubber
    stubber.assert_no_pending_responses()
    stubber.deactivate()


def expect_start(stub: Stubber, *servers: str) -> None:
    stub.add_response("describe_jobs", {"items": []}, {"filters": {"fromDate": "2026-12-01T00:00:00Z"}})
    stub.add_response("describe_source_servers", {"items": [source(s) for s in servers]},
                      {"filters": {"sourceServerIDs": list(servers)}, "maxResults": 200})
    stub.add_response("start_recovery", {"job": job("PENDING", {s: ("PENDING", None) for s in servers})}, {
        "sourceServers": [{"sourceServerID": s} for s in servers], "isDrill": True,
        "tags": {BACKUP_TAG: EXEC, "reclaim:kind": "drs.drill", "reclaim:resource-id": servers[0]}})


def test_apply_starts_a_drill_and_polls_pending_started_completed(sessions: SessionFactory, stub: Stubber) -> None:
    expect_start(stub, S1, S2)
    by_id = {"filters": {"jobIDs": [JOB]}}
    stub.add_response("describe_jobs", {"items": [job("PENDING", {S1: ("PENDING", None), S2: ("PENDING", None)})]},
                      by_id)
    stub.add_response("describe_jobs", {"items": [job("STARTED", {S1: ("LAUNCHED", I1), S2: ("IN_PROGRESS", None)})]},
                      by_id)
    stub.add_response("describe_jobs", {"items": [job("COMPLETED", {S1: ("LAUNCHED", I1), S2: ("LAUNCHED", I2)},
                                                      endDateTime="2026-12-01T10:05:12Z")]}, by_id)
    before = datetime.now(UTC)
    result = drill(sessions, S1, S2).apply(None, backup_of(S1, S2))  # type: ignore[arg-type]
    assert result.changed
    launched_at = result.data.pop("launched_at")
    assert result.data == {"job_id": JOB, "recovery_instance_ids": {S1: I1, S2: I2}, "launch_seconds": 312.0}
    # Each server's launch as the polls saw it: S1 one look before S2 (per-server time to launch).
    seen = {sid: datetime.fromisoformat(at) for sid, at in launched_at.items()}
    assert set(seen) == {S1, S2} and before <= seen[S1] < seen[S2] <= datetime.now(UTC)
    assert f"{S1} as {I1}" in result.message and "312 s" in result.message


def test_a_failed_launch_fails_the_step_with_drs_reason(sessions: SessionFactory, stub: Stubber) -> None:
    expect_start(stub, S1, S2)
    stub.add_response("describe_jobs", {"items": [job("STARTED", {S1: ("FAILED", None), S2: ("IN_PROGRESS", None)})]})
    stub.add_response("describe_job_log_items", {"items": [
        {"event": "JOB_START", "logDateTime": "2026-12-01T10:00:00Z"},
        {"event": "LAUNCH_FAILED", "logDateTime": "2026-12-01T10:03:00Z",
         "eventData": {"sourceServerID": S1, "rawError": "InsufficientInstanceCapacity in us-east-1a"}}]},
        {"jobID": JOB})
    with pytest.raises(VerificationFailed, match=f"launch failed for {S1}: LAUNCH_FAILED .InsufficientInstance"):
        drill(sessions, S1, S2).apply(None, backup_of(S1, S2))  # type: ignore[arg-type]
    assert to_application_error(VerificationFailed("x")).non_retryable  # type: ignore[attr-defined]


def test_throttling_while_polling_waits_and_on_start_is_retryable(sessions: SessionFactory, stub: Stubber) -> None:
    stub.add_response("describe_jobs", {"items": []})
    stub.add_response("describe_source_servers", {"items": [source(S1)]})
    stub.add_client_error("start_recovery", service_error_code="ThrottlingException", http_status_code=429)
    action = drill(sessions, S1)
    with pytest.raises(Exception) as raised:
        action.apply(None, backup_of(S1))  # type: ignore[arg-type]
    error = to_application_error(raised.value)
    assert getattr(error, "type", None) == "ThrottlingException" and not getattr(error, "non_retryable", True)

    expect_start(stub, S1)
    stub.add_client_error("describe_jobs", service_error_code="ThrottlingException", http_status_code=429)
    stub.add_response("describe_jobs", {"items": [job("COMPLETED", {S1: ("LAUNCHED", I1)})]})
    assert action.apply(None, backup_of(S1)).data["recovery_instance_ids"] == {S1: I1}  # type: ignore[arg-type]


def test_polling_hands_over_to_the_retry_policy_when_the_attempt_runs_out(
        sessions: SessionFactory, stub: Stubber, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("activities.actions.drs_drill.DEFAULT_ATTEMPT_BUDGET", 0.0)
    stub.add_response("describe_jobs", {"items": [job("STARTED", {S1: ("IN_PROGRESS", None)})]})  # ours: adopted
    stub.add_response("describe_jobs", {"items": [job("STARTED", {S1: ("IN_PROGRESS", None)})]})
    with pytest.raises(InProgress, match=f"{JOB} is STARTED"):
        drill(sessions, S1).apply(None, backup_of(S1))  # type: ignore[arg-type]


def test_validation_refuses_what_a_drill_must_not_touch(sessions: SessionFactory) -> None:
    fake = FakeDrs(sessions.client(ACCOUNT, REGION, "drs"))
    fake.add_server(S1, {"env": "dev"})
    fake.add_server(S2, {"env": "prod"})
    fake.activate()
    with pytest.raises(Refused, match=r"disagree on tags env \(dev, prod\)"):
        drill(sessions, S1, S2).inspect()
    with pytest.raises(Refused, match="do not exist"):
        drill(sessions, server_id(9)).inspect()
    fake.servers[S2]["tags"] = {"env": "dev"}
    assert drill(sessions, S1, S2).refusal(drill(sessions, S1, S2).inspect()) is None
    fake.servers[S1]["recovery_instance_id"] = I1
    action = drill(sessions, S1)
    assert "already has recovery instance" in str(action.refusal(action.inspect()))
    fake.servers[S1].update(recovery_instance_id=None, replication="INITIAL_SYNC")
    assert "INITIAL_SYNC" in str(action.refusal(action.inspect()))
    with pytest.raises(Refused, match="invalid params"):
        build_action(sessions, "drs.drill", S1, {"source_server_ids": ["i-123"]}, execution_id=EXEC)
    assert DrillParams.model_validate({"sourceServerIDs": [S1]}).source_server_ids == [S1]


def test_never_auto_approved() -> None:
    traits, policy = DrsDrill.traits(), Policy()
    risk = assess_risk(policy, traits, 0.0, {})
    requirement = approval_requirement(policy, traits, risk, 0.0, {})
    assert risk.level.value == "HIGH" and not requirement.auto_approved


def _moto_instance() -> str:
    ec2 = boto3.client("ec2", region_name=REGION)
    image = ec2.register_image(Name="base", RootDeviceName="/dev/xvda",
                               BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}])
    spec = {"ImageId": image["ImageId"], "InstanceType": "t3.micro", "MinCount": 1, "MaxCount": 1}
    return str(ec2.run_instances(**spec)["Instances"][0]["InstanceId"])


def _terminate(iid: str) -> None:
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=[iid])


def test_drill_lifecycle_is_exact_and_idempotent(sessions: SessionFactory) -> None:
    """Two drills at once; one is retried after its answer was lost, verified against moto's status
    checks, then reverted twice: only its own instance is terminated, and only once."""
    fake = FakeDrs(sessions.client(ACCOUNT, REGION, "drs"), launch=lambda sid: _moto_instance(), terminate=_terminate)
    for sid in (S1, S2):
        fake.add_server(sid)
    fake.activate()
    mine, other = drill(sessions, S1), drill(sessions, S2, execution_id="exec-drill-2")
    seen = mine.inspect()
    assert mine.refusal(seen) is None and "start a DRS drill" in mine.plan(seen)[0]
    backup, other_backup = mine.backup(seen), other.backup(other.inspect())
    first = mine.apply(seen, backup)
    other.apply(seen, other_backup)
    again = mine.apply(seen, backup)  # a retried attempt finds its own job
    assert fake.count("StartRecovery") == 2 and again.data["job_id"] == first.data["job_id"]
    verified = converge(mine.verify, seen, backup)
    assert "EC2 status checks ok" in verified.message and verified.data["monthly_savings"] == 0.0
    mine_iid, other_iid = first.data["recovery_instance_ids"][S1], fake.servers[S2]["recovery_instance_id"]

    reverted = mine.revert(seen, backup)
    assert reverted.changed and mine_iid in reverted.message
    assert set(fake.recovery) == {other_iid}
    terminated = [p["recoveryInstanceIDs"] for name, p in fake.calls if name == "TerminateRecoveryInstances"]
    assert terminated == [[mine_iid]]
    assert not mine.revert(seen, backup).changed and not mine.cleanup(backup).changed  # idempotent
    assert fake.count("TerminateRecoveryInstances") == 1
    state = boto3.client("ec2", region_name=REGION).describe_instances(InstanceIds=[mine_iid])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] in ("shutting-down", "terminated")
    assert other.cleanup(other_backup).changed and not fake.recovery


def test_revert_waits_for_a_running_job_and_does_not_terminate_twice(sessions: SessionFactory) -> None:
    fake = FakeDrs(sessions.client(ACCOUNT, REGION, "drs"), steps=3)
    fake.add_server(S1)
    fake.activate()
    action = drill(sessions, S1)
    backup = action.backup(action.inspect())
    assert not action.revert(None, backup).changed  # type: ignore[arg-type]  # nothing started
    action._start(backup)
    with pytest.raises(InProgress, match="still"):
        action.revert(None, backup)  # type: ignore[arg-type]
    converge(action.apply, None, backup)
    iid = fake.servers[S1]["recovery_instance_id"]
    fake.client.terminate_recovery_instances(recoveryInstanceIDs=[iid])  # a first revert's request, answer lost
    assert "terminated" in action.revert(None, backup).message  # type: ignore[arg-type]
    assert fake.count("TerminateRecoveryInstances") == 1 and not fake.recovery  # not asked a second time


def test_verify_waits_for_the_named_probe(sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDrs(sessions.client(ACCOUNT, REGION, "drs"), launch=lambda sid: _moto_instance())
    fake.add_server(S1)
    fake.activate()
    action = drill(sessions, S1, ec2_status_checks=False, probe={"name": "web", "type": "tcp", "port": 443})
    backup = action.backup(action.inspect())
    action.apply(None, backup)  # type: ignore[arg-type]
    answers = iter(["tcp 443: Connection refused", None])
    monkeypatch.setattr("activities.actions.drs_drill.probe_problem", lambda probe, address: next(answers))
    with pytest.raises(InProgress, match=r"probe web .* Connection refused"):
        action.verify(None, backup)  # type: ignore[arg-type]
    assert "probe web ok" in action.verify(None, backup).message  # type: ignore[arg-type]


def test_probe_problem_tcp_and_http() -> None:
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        assert probe_problem(Probe(name="t", type="tcp", port=port), "127.0.0.1") is None
        assert probe_problem(Probe(name="h", type="http", port=port, path="/health"), "127.0.0.1") is None
        assert "503" in str(probe_problem(Probe(name="h", type="http", port=port, path="/"), "127.0.0.1"))
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed = free.getsockname()[1]
    assert probe_problem(Probe(name="t", type="tcp", port=closed, timeout_seconds=1), "127.0.0.1") is not None


def test_report_times_each_server_and_wave() -> None:
    """Several servers per item, several waves: one figure per server (from its own launch, kept by
    the execution), per wave from its first launch request to its last server launched; an item of
    an older generation (no per-server launches) gives its servers its own figure, marked (item)."""
    t0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    s = [server_id(n) for n in range(1, 9)]

    def log(start: int, end: int | None) -> list[dict[str, Any]]:
        steps = [(0, ExecutionStatus.BACKING_UP), (start, ExecutionStatus.APPLYING)]
        steps += [(end, ExecutionStatus.VERIFYING), (end + 5, ExecutionStatus.COMPLETED)] if end is not None else \
            [(start + 400, ExecutionStatus.ROLLED_BACK)]
        return [StepLogEntry(at=t0 + timedelta(seconds=at), status=st, message="").model_dump(mode="json")
                for at, st in steps]

    def item(position: int, wave: int, servers: list[str], window: tuple[int, int | None] | None,
             launches: dict[str, int] | None = None, status: str = "COMPLETED") -> ReportItem:
        rec = Recommendation(id=f"drill-{position}", customer_id="acme", account_id=ACCOUNT, region=REGION,
                             kind="drs.drill", resource_id=servers[0], params={"source_server_ids": servers},
                             estimated_monthly_savings=0)
        launched = launch_window(log(*window)) if window else None
        return ReportItem(position=position, wave=wave, recommendation=rec, status=status, execution_id=f"e{position}",
                          estimated_monthly_savings=0, launch_started_at=launched[0] if launched else None,
                          launched_at=launched[1] if launched else None,
                          server_launches={sid: t0 + timedelta(seconds=at) for sid, at in (launches or {}).items()})

    assert launch_window(log(10, 70)) == (t0 + timedelta(seconds=10), t0 + timedelta(seconds=70))
    assert launch_window(log(10, None)) == (t0 + timedelta(seconds=10), None)  # launch asked, never finished
    assert launch_window(log(10, 70)[:1]) is None
    items = [
        item(0, 0, s[0:2], (1, 125), {s[0]: 61, s[1]: 121}),                 # db: two servers, 60 s and 120 s
        item(1, 1, s[2:3], (200, 290), {s[2]: 290}),                          # app: parallel items
        item(2, 1, s[3:6], (202, 500), {s[3]: 262, s[4]: 382, s[5]: 497}),
        item(3, 2, s[6:7], (600, 700)),                                       # web: older run, item figure only
        item(4, 2, s[7:8], (601, None), {}, "ROLLED_BACK"),                   # launch failed: no figure
    ]
    waves = [WaveProgress(index=i, name=n, mode=WaveMode.PARALLEL, size=1) for i, n in enumerate(["db", "app", "web"])]
    view = PlanView(plan_id="p", name="drill", customer_ids=["acme"], requested_by="alice", phase="execute",
                    dry_run=False, strategy=Strategy.WAVES, rate=RateControl(), total=5, waves=waves,
                    started_at=t0, updated_at=t0)
    report = build_report(view, items)
    recovery = report.recovery
    assert recovery is not None
    assert [(r.recommendation_id, r.server_id, r.time_to_launch_seconds, r.measured) for r in recovery.servers] == [
        ("drill-0", s[0], 60.0, "server"), ("drill-0", s[1], 120.0, "server"),
        ("drill-1", s[2], 90.0, "server"),
        ("drill-2", s[3], 60.0, "server"), ("drill-2", s[4], 180.0, "server"), ("drill-2", s[5], 295.0, "server"),
        ("drill-3", s[6], 100.0, "item"), ("drill-4", s[7], None, None)]
    assert [(w.wave, w.items, w.launched, w.servers, w.servers_launched, w.time_to_launch_seconds,
             w.slowest_item_seconds, w.slowest_server_seconds) for w in recovery.waves] == [
        ("db", 1, 1, 2, 2, 120.0, 120.0, 120.0),     # first request 1 s, last server 121 s
        ("app", 2, 2, 4, 4, 297.0, 295.0, 295.0),    # first request 200 s, last server 497 s
        ("web", 2, 1, 2, 1, 100.0, 100.0, 100.0)]    # 600 s to 700 s; the failed launch adds nothing
    assert recovery.total_seconds == 699.0
    # JSON as stored and served, and Markdown.
    assert build_report(view, items).model_dump(mode="json")["recovery"]["servers"][4]["time_to_launch_seconds"] == 180.0
    markdown = render_markdown(report)
    assert "## Recovery time (drills)" in markdown
    assert "| app | 2 | 2 | 4 of 4 | 297 s | 295 s |" in markdown
    assert f"| drill-2 | app | {s[4]} | COMPLETED | 180 s |" in markdown
    assert f"| drill-3 | web | {s[6]} | COMPLETED | 100 s (item) |" in markdown
    assert f"| drill-4 | web | {s[7]} | ROLLED_BACK |  |" in markdown
