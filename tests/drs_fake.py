"""A stateful AWS Elastic Disaster Recovery for tests, on botocore's Stubber (moto has no DRS).

`FakeDrs` is a `Stubber` whose answers come from a small model of DRS instead of a fixed queue, so
executions running at once (a plan's parallel waves, a cleanup beside the next wave's launch) can
share one client in any order. Every request is validated by the client against the service model
as usual, and every answer by Stubber's own response validation against the operation's output
shape. Attach it to the client the worker's SessionFactory hands out (the same seam the real client
uses): `FakeDrs(sessions.client(account, region, "drs"))`.

A launch job moves one step each time DRS is asked about it (PENDING, STARTED, COMPLETED after
`steps` looks); at COMPLETED its servers are LAUNCHED (a recovery instance each, made by `launch`,
moto's EC2 in the plan test) or FAILED (`fail`, with a LAUNCH_FAILED log item). A job with a server
in `launch_after` moves by `clock` instead (the time-skipping server's, in tests of long launches):
PENDING for `pending_for`, then STARTED, each such server LAUNCHED once its delay has passed, the job
COMPLETED when all are. A terminate job
ends at the next look, its instances gone from DescribeRecoveryInstances (and `terminate` called).
"""

from __future__ import annotations

import itertools
import random
import string
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber
from temporalio import activity

ACCOUNT = "123456789012"


def now_iso(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def server_id(n: int | None = None) -> str:
    suffix = f"{n:017d}" if n is not None else "".join(random.choices(string.ascii_lowercase + string.digits, k=17))
    return f"s-{suffix}"


def server_clock() -> datetime:
    """The time-skipping server's clock, as the activity calling DRS sees it (its attempt's start)."""
    try:
        return activity.info().started_time
    except RuntimeError:
        return datetime.now(UTC)


class FakeDrs(Stubber):
    def __init__(self, client: Any, *, steps: int = 2, launch: Callable[[str], str] | None = None,
                 terminate: Callable[[str], None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(client)
        self.steps = steps
        self.clock = clock or (lambda: datetime.now(UTC))
        self.launch_after: dict[str, timedelta] = {}
        """Source server id -> how long after its job was created (on `clock`) it is launched."""
        self.pending_for = timedelta(0)
        """A clocked job's time in PENDING before it is STARTED."""
        self._launch = launch or (lambda sid: "i-" + "".join(random.choices("0123456789abcdef", k=17)))
        self._terminate = terminate or (lambda iid: None)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.servers: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self._looks: dict[str, int] = {}
        self.recovery: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, list[dict[str, Any]]] = {}
        self.fail: dict[str, str] = {}
        """Source server id -> the raw error its launch fails with."""
        self.throttles: dict[str, int] = {}
        """Operation name (StartRecovery, DescribeJobs, ...) -> how many of its next calls are throttled."""
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.launched_at: dict[str, datetime] = {}

    # ---- seeding ---------------------------------------------------------------------------

    def add_server(self, sid: str, tags: dict[str, str] | None = None, replication: str = "CONTINUOUS",
                   recovery_instance_id: str | None = None) -> str:
        self.servers[sid] = {"tags": dict(tags or {}), "replication": replication,
                             "recovery_instance_id": recovery_instance_id, "last_job": None, "last_result": None}
        return sid

    # ---- Stubber's hooks -------------------------------------------------------------------

    def _assert_expected_params(self, model: Any, params: Any, context: Any, **kwargs: Any) -> None:
        context["fake_drs_params"] = dict(params)

    def _get_response_handler(self, model: Any, params: Any, context: Any, **kwargs: Any) -> Any:
        name, api_params = model.name, context.get("fake_drs_params", {})
        with self._lock:
            self.calls.append((name, api_params))
            if self.throttles.get(name, 0) > 0:
                self.throttles[name] -= 1
                return self._error(name, "ThrottlingException", "Rate exceeded", 429)
            answer = getattr(self, "_" + name)(api_params)
        if isinstance(answer, tuple):
            return answer
        self._validate_operation_response(name, answer)
        return AWSResponse("https://drs.fake", 200, {}, None), answer

    def _error(self, name: str, code: str, message: str, status: int) -> Any:
        parsed = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return AWSResponse("https://drs.fake", status, {}, None), parsed

    # ---- the operations ----------------------------------------------------------------------

    def _DescribeSourceServers(self, p: dict[str, Any]) -> dict[str, Any]:
        ids = (p.get("filters") or {}).get("sourceServerIDs") or list(self.servers)
        items = []
        for sid in ids:
            if sid not in self.servers:
                continue
            s = self.servers[sid]
            item: dict[str, Any] = {
                "sourceServerID": sid, "arn": f"arn:aws:drs:us-east-1:{ACCOUNT}:source-server/{sid}",
                "tags": s["tags"], "dataReplicationInfo": {"dataReplicationState": s["replication"]},
                "replicationDirection": "FAILOVER",
                "sourceProperties": {"identificationHints": {"hostname": f"host-{sid[-4:]}"}},
                "lastLaunchResult": s["last_result"] or "NOT_STARTED",
            }
            if s["recovery_instance_id"]:
                item["recoveryInstanceId"] = s["recovery_instance_id"]
            if s["last_job"]:
                item["lifeCycle"] = {"lastLaunch": {"initiated": {"jobID": s["last_job"], "type": "DRILL"}}}
            items.append(item)
        return {"items": items}

    def _StartRecovery(self, p: dict[str, Any]) -> dict[str, Any]:
        job_id = f"drsjob-{next(self._ids):017d}"
        servers = [s["sourceServerID"] for s in p["sourceServers"]]
        for sid in servers:
            if sid not in self.servers:
                return self._error("StartRecovery", "ValidationException", f"unknown {sid}", 400)
        job = {"jobID": job_id, "arn": f"arn:aws:drs:us-east-1:{ACCOUNT}:job/{job_id}", "type": "LAUNCH",
               "initiatedBy": "START_DRILL" if p.get("isDrill") else "START_RECOVERY",
               "creationDateTime": now_iso(self.clock()), "status": "PENDING", "tags": dict(p.get("tags") or {}),
               "participatingServers": [{"sourceServerID": sid, "launchStatus": "PENDING"} for sid in servers]}
        self.jobs[job_id], self._looks[job_id] = job, 0
        self.logs[job_id] = [{"event": "JOB_START", "logDateTime": now_iso(self.clock())}]
        for sid in servers:
            self.servers[sid].update(last_job=job_id, last_result="PENDING")
        return {"job": job}

    def _advance(self, job: dict[str, Any]) -> None:
        if job["status"] == "COMPLETED":
            return
        self._looks[job["jobID"]] += 1
        if job["type"] == "TERMINATE":
            for ps in job["participatingServers"]:
                rid = ps["recoveryInstanceID"]
                instance = self.recovery.pop(rid, None)
                if instance is not None:
                    self._terminate(instance["ec2InstanceID"])
                    self.servers[instance["sourceServerID"]]["recovery_instance_id"] = None
                ps["launchStatus"] = "TERMINATED"
            job.update(status="COMPLETED", endDateTime=now_iso(self.clock()))
            return
        if any(ps["sourceServerID"] in self.launch_after for ps in job["participatingServers"]):
            self._advance_by_clock(job)
            return
        if self._looks[job["jobID"]] < self.steps:
            job["status"] = "STARTED"
            for ps in job["participatingServers"]:
                ps["launchStatus"] = "IN_PROGRESS"
            return
        for ps in job["participatingServers"]:
            self._land(job, ps)
        self._end(job)

    def _advance_by_clock(self, job: dict[str, Any]) -> None:
        elapsed = self.clock() - datetime.fromisoformat(job["creationDateTime"].replace("Z", "+00:00"))
        if elapsed < self.pending_for:
            return
        job["status"] = "STARTED"
        for ps in job["participatingServers"]:
            if ps["launchStatus"] in ("PENDING", "IN_PROGRESS"):
                if elapsed >= self.launch_after.get(ps["sourceServerID"], timedelta(0)):
                    self._land(job, ps)
                else:
                    ps["launchStatus"] = "IN_PROGRESS"
        if all(ps["launchStatus"] in ("LAUNCHED", "FAILED") for ps in job["participatingServers"]):
            self._end(job)

    def _land(self, job: dict[str, Any], ps: dict[str, Any]) -> None:
        """One server's launch ends: FAILED when `fail` names it, else LAUNCHED with its instance."""
        sid = ps["sourceServerID"]
        if sid in self.fail:
            ps["launchStatus"] = "FAILED"
            self.servers[sid]["last_result"] = "FAILED"
            self.logs[job["jobID"]].append({"event": "LAUNCH_FAILED", "logDateTime": now_iso(self.clock()),
                                            "eventData": {"sourceServerID": sid, "rawError": self.fail[sid]}})
            return
        iid = self._launch(sid)
        ps.update(launchStatus="LAUNCHED", recoveryInstanceID=iid)
        self.recovery[iid] = {"recoveryInstanceID": iid, "ec2InstanceID": iid, "ec2InstanceState": "RUNNING",
                              "jobID": job["jobID"], "sourceServerID": sid, "isDrill": True,
                              "arn": f"arn:aws:drs:us-east-1:{ACCOUNT}:recovery-instance/{iid}"}
        self.servers[sid].update(recovery_instance_id=iid, last_result="SUCCEEDED")
        self.launched_at[sid] = self.clock()

    def _end(self, job: dict[str, Any]) -> None:
        job.update(status="COMPLETED", endDateTime=now_iso(self.clock()))
        self.logs[job["jobID"]].append({"event": "JOB_END", "logDateTime": now_iso(self.clock())})

    def _DescribeJobs(self, p: dict[str, Any]) -> dict[str, Any]:
        wanted = (p.get("filters") or {}).get("jobIDs")
        jobs = [j for jid, j in self.jobs.items() if wanted is None or jid in wanted]
        for job in jobs:
            self._advance(job)
        return {"items": [dict(j) for j in jobs]}

    def _DescribeJobLogItems(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"items": list(self.logs.get(p["jobID"], []))}

    def _DescribeRecoveryInstances(self, p: dict[str, Any]) -> dict[str, Any]:
        wanted = (p.get("filters") or {}).get("recoveryInstanceIDs")
        for job in self.jobs.values():
            if job["type"] == "TERMINATE":
                self._advance(job)
        return {"items": [dict(r) for rid, r in self.recovery.items() if wanted is None or rid in wanted]}

    def _TerminateRecoveryInstances(self, p: dict[str, Any]) -> dict[str, Any]:
        job_id = f"drsjob-{next(self._ids):017d}"
        job = {"jobID": job_id, "type": "TERMINATE", "initiatedBy": "TERMINATE_RECOVERY_INSTANCES",
               "creationDateTime": now_iso(self.clock()), "status": "STARTED", "tags": {},
               "participatingServers": [{"sourceServerID": self.recovery[rid]["sourceServerID"],
                                         "recoveryInstanceID": rid, "launchStatus": "LAUNCHED"}
                                        for rid in p["recoveryInstanceIDs"] if rid in self.recovery]}
        for rid in p["recoveryInstanceIDs"]:
            if rid in self.recovery:
                self.recovery[rid]["ec2InstanceState"] = "SHUTTING-DOWN"
        self.jobs[job_id], self._looks[job_id] = job, 0
        return {"job": job}

    # ---- what the tests read -------------------------------------------------------------------

    def count(self, operation: str) -> int:
        return sum(1 for name, _ in self.calls if name == operation)
