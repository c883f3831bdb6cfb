"""drs.drill: launch AWS Elastic Disaster Recovery drill instances, health-check them, and clean up.

The drill converges like every kind: the launch job is tagged with the execution id, so a retried
apply finds its own job instead of starting a second one, and revert/cleanup terminate exactly the
recovery instances that job launched (never another drill's, never a failed-over server's).
"""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import AliasChoices, Field, field_validator
from temporalio import activity
from temporalio.exceptions import CancelledError

from activities.actions.base import BACKUP_TAG, Action, register
from activities.errors import THROTTLING_CODES, InProgress, Refused, VerificationFailed, client_error_code
from activities.resources.drs_source_server import (
    SOURCE_SERVER_ID,
    DrillServers,
    DrsSourceServer,
    observe_servers,
)
from domain.base import StrictModel
from domain.execution import BackupRecord, Observation, StepResult
from domain.policy import RiskLevel

#: Replication states from which DRS has a point in time to launch (initial sync done, not broken).
LAUNCHABLE = frozenset({"CONTINUOUS", "BACKLOG", "CREATING_SNAPSHOT", "RESCAN"})
#: How far before the backup step a job may have been created and still be ours (clock skew).
_SKEW = timedelta(minutes=5)
_GONE = frozenset({"TERMINATED", "NOT_FOUND"})
_FAIL_EVENTS = frozenset({"LAUNCH_FAILED", "CONVERSION_FAIL", "SNAPSHOT_FAIL", "USING_PREVIOUS_SNAPSHOT_FAILED",
                          "CLEANUP_FAIL", "SERVER_SKIPPED", "NETWORK_RECOVERY_FAIL"})
#: Outside an activity (unit tests, scripts) one apply polls at most this long before InProgress.
DEFAULT_ATTEMPT_BUDGET = 60.0
#: Between polls an attempt heartbeats at least this often (well inside options.APPLY_HEARTBEAT).
HEARTBEAT_EVERY = 30.0


class Probe(StrictModel):
    """A check the item names: a TCP connect or an HTTP GET from the worker to each recovery
    instance (the worker must reach the recovery subnet: inside the VPC, peered, or over a VPN)."""

    name: str = Field(min_length=1, max_length=64)
    type: Literal["tcp", "http"]
    port: int = Field(ge=1, le=65535)
    path: str = Field(default="/", pattern=r"^/", max_length=1024, description="HTTP only.")
    expect_status: int = Field(default=200, ge=100, le=599, description="HTTP only.")
    address: Literal["private_ip", "public_ip"] = "private_ip"
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)


class DrillParams(StrictModel):
    source_server_ids: list[str] = Field(
        default_factory=list, max_length=100,
        validation_alias=AliasChoices("source_server_ids", "sourceServerIDs"),
        description="The DRS source servers this item launches (default: the item's resource_id). "
                    "The plan report gives each its own time to launch.")
    ec2_status_checks: bool = Field(default=True, description="Verify waits for the EC2 status checks to pass.")
    probe: Probe | None = None
    poll_interval_seconds: float = Field(
        default=15.0, ge=0, le=300, description="Between looks at the launch job (and at terminations).")

    @field_validator("source_server_ids")
    @classmethod
    def _server_ids(cls, ids: list[str]) -> list[str]:
        bad = [i for i in ids if not re.fullmatch(SOURCE_SERVER_ID, i)]
        if bad:
            raise ValueError(f"not DRS source server ids (s- and 17 letters or digits): {', '.join(bad)}")
        if len(set(ids)) != len(ids):
            raise ValueError("a source server is named twice")
        return ids


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(at: str | None) -> datetime | None:
    return None if not at else datetime.fromisoformat(at.replace("Z", "+00:00"))


@register
class DrsDrill(Action[DrillParams, DrillServers]):
    """Launch DRS drill instances (`StartRecovery`, `isDrill=true`) for the item's source servers,
    wait for the job to launch them, then check them (EC2 status checks, and the probe the item
    names). Revert, and cleanup when the rollback window ends, terminate exactly the recovery
    instances this drill's job launched. Risk HIGH: a person always approves a drill (its own
    approval, or the approval of a plan's dry run).

    Example recommendation::

        {"id": "drill-web-1", "customer_id": "acme", "account_id": "123456789012",
         "region": "us-east-1", "kind": "drs.drill", "resource_id": "s-1234567890abcdef0",
         "params": {"source_server_ids": ["s-1234567890abcdef0"],
                    "probe": {"name": "web", "type": "http", "port": 80, "path": "/health"}},
         "estimated_monthly_savings": 0}
    """

    kind = "drs.drill"
    resource = DrsSourceServer
    params_model = DrillParams
    reversible = True  # revert and cleanup terminate what the drill launched
    # HIGH: a drill always waits for a person (its own approval, or a plan's approved dry run).
    base_risk = RiskLevel.HIGH
    permissions = (
        "drs:DescribeSourceServers", "drs:StartRecovery", "drs:DescribeJobs", "drs:DescribeJobLogItems",
        "drs:DescribeRecoveryInstances", "drs:TerminateRecoveryInstances",
        "ec2:DescribeInstanceStatus", "ec2:DescribeInstances",
    )
    volatile_state = frozenset({"servers"})  # replication state moves on its own; refusal() re-judges it
    # A launch (snapshot, conversion, boot) can take DRS hours for a big server: the apply may wait this
    # long in all (one step timeout per attempt, retried on InProgress, heartbeating while it polls).
    apply_deadline = timedelta(hours=6)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = _ServerClock()
        self._launched: dict[str, str] = _carried_launches()
        """Source server id -> when a poll first saw it LAUNCHED (server clock), kept across attempts."""

    def poll_after_seconds(self) -> float:
        return max(self.params.poll_interval_seconds, 1.0)

    def progress(self) -> dict[str, Any]:
        """The servers seen launched so far, and when: the workflow keeps the first instant of each."""
        return {"launched_at": dict(self._launched)}

    @property
    def server_ids(self) -> list[str]:
        return list(self.params.source_server_ids) or [self.rec.resource_id]

    # ---- validation --------------------------------------------------------------------

    def inspect(self) -> Observation:
        return observe_servers(self.client, self.server_ids)

    def refusal(self, seen: Observation) -> str | None:
        if self.rec.resource_id not in self.server_ids:
            return f"resource_id {self.rec.resource_id} must be one of the item's source_server_ids"
        for s in self.state(seen).servers:
            sid = s.source_server_id
            if s.replication_direction == "FAILBACK":
                return f"{sid} replicates back (failback): it is a recovered server, not a drill source"
            if s.replication_state not in LAUNCHABLE:
                return f"{sid} replication is {s.replication_state or 'unknown'}: nothing to launch a drill from"
            if s.last_launch_result == "PENDING":
                return f"{sid} has a launch in progress (job {s.last_launch_job_id})"
            if s.recovery_instance_id:
                return (f"{sid} already has recovery instance {s.recovery_instance_id}; a new launch would "
                        "replace it. Terminate it first (or let its drill's cleanup do so)")
        return None

    def plan(self, seen: Observation) -> list[str]:
        servers = ", ".join(self.server_ids)
        checks = ["EC2 status checks"] if self.params.ec2_status_checks else []
        if (probe := self.params.probe) is not None:
            checks.append(f"probe {probe.name} ({probe.type} {probe.port} on the {probe.address.replace('_', ' ')})")
        return [f"start a DRS drill (StartRecovery, isDrill) for {servers}, tagged with the execution id",
                "wait for the job to launch every recovery instance",
                f"check them: {', '.join(checks) or 'nothing (no check asked)'}",
                "on revert, or when the rollback window ends: terminate the recovery instances this drill launched"]

    def check_permissions(self, seen: Observation) -> list[str]:
        self.aws.describe_jobs(maxResults=1)
        ec2 = self.client("ec2")
        return ["drs:DescribeJobs",
                self.dry_run(ec2.describe_instance_status, "ec2:DescribeInstanceStatus", IncludeAllInstances=True)]

    def unverified_permissions(self) -> list[str]:
        """DRS has no DryRun: its mutating calls (and what DRS does in EC2 on the caller's behalf) are not proven."""
        return ["drs:StartRecovery", "drs:TerminateRecoveryInstances"]

    def estimate_monthly_savings(self, seen: Observation) -> float:
        return 0.0  # a drill spends; it saves nothing

    # ---- the change --------------------------------------------------------------------

    def backup(self, seen: Observation) -> BackupRecord:
        """Nothing to save: the record says where this drill's job is looked for (jobs created
        since, tagged with the execution id) and which servers it covers."""
        since = datetime.now(UTC) - _SKEW
        return BackupRecord(kind=self.kind, resource_id=self.rec.resource_id,
                            data={"jobs_since": _iso(since), "source_server_ids": self.server_ids})

    def apply(self, seen: Observation, backup: BackupRecord) -> StepResult:
        job = self._job(backup) or self._start(backup)
        job = self._poll(job["jobID"], self._launch_progress)
        launched = {s["sourceServerID"]: s["recoveryInstanceID"] for s in job["participatingServers"]}
        created, ended = _parse(job.get("creationDateTime")), _parse(job.get("endDateTime"))
        seconds = round((ended - created).total_seconds(), 1) if created and ended else None
        took = f" in {seconds:g} s (DRS job clock)" if seconds is not None else ""
        servers = ", ".join(f"{sid} as {iid}" for sid, iid in launched.items())
        now = _iso_exact(self._clock.now())
        return StepResult(changed=True, message=f"drill job {job['jobID']} launched {servers}{took}", data={
            "job_id": job["jobID"], "recovery_instance_ids": launched, "launch_seconds": seconds,
            "launched_at": {sid: self._launched.get(sid, now) for sid in launched}})

    def verify(self, seen: Observation, backup: BackupRecord) -> StepResult:
        job = self._job(backup)
        if job is None:
            raise VerificationFailed("no drill job of this execution was found")
        instances = self._recovery_instances(job)
        ids = sorted(i["ec2InstanceID"] for i in instances.values() if i.get("ec2InstanceID"))
        if len(ids) != len(self.server_ids):
            raise VerificationFailed(f"expected {len(self.server_ids)} recovery instances, found {len(ids)}")
        checked = []
        if self.params.ec2_status_checks:
            self._status_checks(ids)
            checked.append("EC2 status checks ok")
        if self.params.probe is not None:
            self._probe(ids, self.params.probe)
            checked.append(f"probe {self.params.probe.name} ok")
        return StepResult(changed=False, message=f"recovery instances {', '.join(ids)}: "
                                                 f"{'; '.join(checked) or 'launched (no check asked)'}",
                          data={"monthly_savings": 0.0, "recovery_instance_ids": ids})

    def revert(self, seen: Observation, backup: BackupRecord) -> StepResult:
        return self._end_drill(backup)

    def cleanup(self, backup: BackupRecord) -> StepResult:
        """The end of the drill: its recovery instances go once the rollback window has passed."""
        return self._end_drill(backup)

    # ---- the launch job ----------------------------------------------------------------

    def _mine(self, job: dict[str, Any]) -> bool:
        return (job.get("tags") or {}).get(BACKUP_TAG) == self.execution_id and job.get("type", "LAUNCH") == "LAUNCH"

    def _jobs(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        query: dict[str, Any] = {"filters": filters}
        while True:
            page = self.aws.describe_jobs(**query)
            found += page.get("items") or []
            if not page.get("nextToken"):
                return found
            query["nextToken"] = page["nextToken"]

    def _job(self, backup: BackupRecord) -> dict[str, Any] | None:
        """This execution's launch job (the oldest, should there be two), or None."""
        mine = [j for j in self._jobs({"fromDate": backup.data["jobs_since"]}) if self._mine(j)]
        return min(mine, key=lambda j: str(j.get("creationDateTime"))) if mine else None

    def _start(self, backup: BackupRecord) -> dict[str, Any]:
        """StartRecovery has no idempotency token: before calling it, a server whose last launch
        began since the backup step names the job (ours, whose answer was lost: adopt it)."""
        since = backup.data["jobs_since"]
        for s in self.state(self.inspect()).servers:
            if s.last_launch_job_id:
                jobs = self._jobs({"jobIDs": [s.last_launch_job_id], "fromDate": since})
                if any(self._mine(j) for j in jobs):
                    return next(j for j in jobs if self._mine(j))
                if jobs:
                    raise Refused(f"another launch ({s.last_launch_job_id}) started for {s.source_server_id} "
                                  "since validation; not starting a drill over it")
            if s.recovery_instance_id:
                raise Refused(f"{s.source_server_id} has recovery instance {s.recovery_instance_id} since "
                              "validation; a drill would replace it")
        tags = {BACKUP_TAG: self.execution_id, "reclaim:kind": self.kind, "reclaim:resource-id": self.rec.resource_id}
        answer = self.aws.start_recovery(
            sourceServers=[{"sourceServerID": sid} for sid in self.server_ids], isDrill=True, tags=tags)
        return dict(answer["job"])

    def _launch_progress(self, job: dict[str, Any]) -> bool:
        """True once every server launched; VerificationFailed (with DRS's reason) when one failed."""
        servers = {s["sourceServerID"]: s for s in job.get("participatingServers") or []}
        failed = [sid for sid, s in servers.items() if s.get("launchStatus") in ("FAILED", "TERMINATED")]
        if failed:
            raise VerificationFailed(f"drill job {job['jobID']}: launch failed for {', '.join(failed)}: "
                                     f"{self._failure_reason(job['jobID'], failed)}")
        for sid, s in servers.items():  # the per-server time to launch (to within a poll interval)
            if s.get("launchStatus") == "LAUNCHED" and s.get("recoveryInstanceID") and sid not in self._launched:
                self._launched[sid] = _iso_exact(self._clock.now())
        if job.get("status") != "COMPLETED":
            return False
        unlaunched = [sid for sid in self.server_ids
                      if servers.get(sid, {}).get("launchStatus") != "LAUNCHED" or not servers[sid].get("recoveryInstanceID")]
        if unlaunched:
            raise VerificationFailed(f"drill job {job['jobID']} completed without launching {', '.join(unlaunched)}")
        return True

    def _failure_reason(self, job_id: str, servers: list[str]) -> str:
        """The job log's failure events for these servers, in DRS's words."""
        reasons: list[str] = []
        query: dict[str, Any] = {"jobID": job_id}
        while True:
            page = self.aws.describe_job_log_items(**query)
            for item in page.get("items") or []:
                data = item.get("eventData") or {}
                if item.get("event") in _FAIL_EVENTS and data.get("sourceServerID") in (*servers, None):
                    reasons.append(f"{item['event']}" + (f" ({data['rawError']})" if data.get("rawError") else ""))
            if not page.get("nextToken"):
                return "; ".join(reasons) or "no reason in the job log"
            query["nextToken"] = page["nextToken"]

    def _poll(self, job_id: str, done: Any) -> dict[str, Any]:
        """Look at the job every poll_interval_seconds until `done(job)`, for at most most of this
        attempt's time; then InProgress hands the wait to the workflow's retry policy. Throttling
        while polling waits longer instead of failing the step."""
        deadline = time.monotonic() + _attempt_budget()
        interval = self.params.poll_interval_seconds
        wait = interval
        while True:
            try:
                found = self._jobs({"jobIDs": [job_id]})
                job, wait = (found[0] if found else {}), interval
            except ClientError as exc:
                if client_error_code(exc) not in THROTTLING_CODES:
                    raise
                wait, job = min(max(wait * 2, interval), 120.0), {}
            if job and done(job):
                return job
            if time.monotonic() + wait > deadline:
                _heartbeat(f"drill job {job_id}: {job.get('status', 'throttled')}", self._launched)
                raise InProgress(f"drill job {job_id} is {job.get('status', 'not answered (throttled)')}")
            _pause(wait, f"drill job {job_id}: {job.get('status', 'throttled')}", self._launched)

    # ---- the recovery instances ----------------------------------------------------------

    def _recovery_instances(self, job: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The recovery instances this job launched that DRS still knows, by recovery instance id."""
        ids = [s["recoveryInstanceID"] for s in job.get("participatingServers") or [] if s.get("recoveryInstanceID")]
        if not ids:
            return {}
        found: dict[str, dict[str, Any]] = {}
        query: dict[str, Any] = {"filters": {"recoveryInstanceIDs": ids}}
        while True:
            page = self.aws.describe_recovery_instances(**query)
            for item in page.get("items") or []:
                if item.get("jobID") in (None, job["jobID"]) and item["recoveryInstanceID"] in ids:
                    found[item["recoveryInstanceID"]] = dict(item)
            if not page.get("nextToken"):
                return found
            query["nextToken"] = page["nextToken"]

    def _end_drill(self, backup: BackupRecord) -> StepResult:
        """Terminate what this drill's job launched, and only that; done once DRS lists none of them."""
        job = self._job(backup)
        if job is None:
            return StepResult(changed=False, message="no drill job was started: nothing to terminate")
        if job.get("status") != "COMPLETED":
            raise InProgress(f"drill job {job['jobID']} is still {job.get('status')}; terminating once it ends")
        launched = self._live(job)
        if not launched:
            return StepResult(changed=False, message=f"the recovery instances of {job['jobID']} are terminated")
        if not self._terminating(job, launched):
            self.aws.terminate_recovery_instances(recoveryInstanceIDs=launched)
        ended = self._poll(job["jobID"], lambda j: not self._live(j))
        return StepResult(changed=True, message=f"terminated recovery instances {', '.join(launched)} "
                                                f"of drill job {ended['jobID']}")

    def _live(self, job: dict[str, Any]) -> list[str]:
        instances = self._recovery_instances(job)
        return sorted(rid for rid, i in instances.items() if i.get("ec2InstanceState") not in _GONE)

    def _terminating(self, job: dict[str, Any], ids: list[str]) -> bool:
        """A TERMINATE job for these instances, begun since the launch and not yet over (a retried
        revert must not ask twice)."""
        since = job.get("creationDateTime") or _iso(datetime.now(UTC) - _SKEW)
        for other in self._jobs({"fromDate": since}):
            covered = {s.get("recoveryInstanceID") for s in other.get("participatingServers") or []}
            if other.get("type") == "TERMINATE" and other.get("status") != "COMPLETED" and covered & set(ids):
                return True
        return False

    def _status_checks(self, ids: list[str]) -> None:
        ec2 = self.client("ec2")
        statuses = ec2.describe_instance_status(InstanceIds=ids, IncludeAllInstances=True)["InstanceStatuses"]
        by_id = {s["InstanceId"]: s for s in statuses}
        waiting = []
        for iid in ids:
            s = by_id.get(iid)
            if s is None or s["InstanceState"]["Name"] == "pending":
                waiting.append(f"{iid} pending")
                continue
            if s["InstanceState"]["Name"] != "running":
                raise VerificationFailed(f"recovery instance {iid} is {s['InstanceState']['Name']}")
            for check in ("SystemStatus", "InstanceStatus"):
                status = s.get(check, {}).get("Status")
                if status == "impaired":
                    raise VerificationFailed(f"recovery instance {iid}: {check} impaired")
                if status != "ok":
                    waiting.append(f"{iid} {check} {status}")
        if waiting:
            raise InProgress("status checks not passed yet: " + ", ".join(waiting))

    def _probe(self, ids: list[str], probe: Probe) -> None:
        ec2 = self.client("ec2")
        reservations = ec2.describe_instances(InstanceIds=ids)["Reservations"]
        field = "PrivateIpAddress" if probe.address == "private_ip" else "PublicIpAddress"
        for instance in (i for r in reservations for i in r["Instances"]):
            address = instance.get(field)
            if not address:
                raise VerificationFailed(f"recovery instance {instance['InstanceId']} has no {probe.address}")
            problem = probe_problem(probe, address)
            if problem:
                raise InProgress(f"probe {probe.name} on {instance['InstanceId']} ({address}): {problem}")


def probe_problem(probe: Probe, address: str) -> str | None:
    """Why the probe does not pass at `address` yet, or None."""
    if probe.type == "tcp":
        try:
            with socket.create_connection((address, probe.port), timeout=probe.timeout_seconds):
                return None
        except OSError as exc:
            return f"tcp {probe.port}: {exc.strerror or exc}"
    url = f"http://{address}:{probe.port}{probe.path}"
    try:
        with urllib.request.urlopen(url, timeout=probe.timeout_seconds) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, urllib.error.URLError) as exc:
        return f"GET {url}: {exc}"
    return None if status == probe.expect_status else f"GET {url} answered {status}, expected {probe.expect_status}"


def _attempt_budget() -> float:
    """How long one attempt may poll: most of its start-to-close timeout, leaving room to answer."""
    try:
        info = activity.info()
    except RuntimeError:
        return DEFAULT_ATTEMPT_BUDGET
    timeout = info.start_to_close_timeout
    return DEFAULT_ATTEMPT_BUDGET if timeout is None else max(timeout.total_seconds() * 0.75 - 1.0, 0.0)


def _heartbeat(details: str, launched: dict[str, str]) -> bool:
    """Heartbeat with what a retried attempt must not lose (the servers seen launched, and when);
    False outside an activity."""
    try:
        activity.heartbeat({"status": details, "launched": dict(launched)})
    except RuntimeError:
        return False
    return True


def _pause(seconds: float, details: str, launched: dict[str, str]) -> None:
    """Wait between polls; in an activity, heartbeat at least every HEARTBEAT_EVERY and end at once
    when cancelled."""
    if not _heartbeat(details, launched):
        time.sleep(seconds)
        return
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        activity.wait_for_cancelled_sync(min(left, HEARTBEAT_EVERY))
        if activity.is_cancelled():
            raise CancelledError(f"cancelled while waiting: {details}")
        if end - time.monotonic() > 0:
            _heartbeat(details, launched)
    if activity.is_cancelled():
        raise CancelledError(f"cancelled while waiting: {details}")


def _carried_launches() -> dict[str, str]:
    """The servers an earlier attempt of this activity saw launched (its last heartbeat)."""
    try:
        details = activity.info().heartbeat_details
    except RuntimeError:
        return {}
    last = details[-1] if details else None
    launched = last.get("launched") if isinstance(last, dict) else None
    return {str(k): str(v) for k, v in launched.items()} if isinstance(launched, dict) else {}


def _iso_exact(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


class _ServerClock:
    """Now on the Temporal server's clock, the one the workflow's log uses: the attempt's start as
    the server recorded it plus what has passed since (monotonic). Time to launch is measured from
    the execution entering APPLYING, so both ends must be on one clock. The wall clock outside an
    activity."""

    def __init__(self) -> None:
        try:
            self._origin: datetime | None = activity.info().started_time
        except RuntimeError:
            self._origin = None
        self._since = time.monotonic()

    def now(self) -> datetime:
        if self._origin is None:
            return datetime.now(UTC)
        return self._origin + timedelta(seconds=time.monotonic() - self._since)
