"""`python -m bench --only race`: Reclaim against AWS's throttling, and the boto3 baseline, in one run.

The account and the rules come from the aws-race tools (read-only, outside this repo):
`mockaws.py --throttle` (moto behind AWS's token buckets), `account.py --scale N` (a
wasteful account with traps, and its manifest), `verify.py` (the end state),
`boto3_baseline.py` (a thread pool doing the same changes without safety) and
`limit.py` (the lower bound the buckets put on wall time).

Reclaim's side: every manifest entry becomes a recommendation of its kind, traps
included (production instances, half of them also tagged Idle; Elastic IPs
associated with production), as a recommender that looks at tags and types only
would list them; they go in ONE plan (parallel, no rollback window so executions
close, backups retained: verify.py wants each deleted volume's snapshot; the default
policy auto-approves what it may); "bob" (approver) approves, in batches, every
item that waits for a person. The worker runs with its AWS budget on
(RECLAIM_AWS_BUDGET_SHARE=1: this worker spends AWS's whole buckets). The
baseline then runs on a fresh server and a fresh account of the same scale.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temporalio.client import Client

from activities.gateway.coalesce import operation_name
from activities.gateway.ledger import GATEWAY, LEDGER_LINE
from bench import kinds, procs
from domain.execution import ApprovalInput, ExecutionOptions
from domain.plan import PLAN_TERMINAL, PlanSpec, Quota, RateControl, Strategy
from domain.policy import Role
from domain.recommendation import Recommendation
from runtime.settings import Settings
from starter.devserver import free_port
from starter.executions import Executions, ReclaimError
from starter.plans import Plans
from store.repository import Store

if TYPE_CHECKING:
    from bench.__main__ import Bench

#: The aws-race tools: $RECLAIM_AWS_RACE, else ../shared/aws-race beside the repository.
DEFAULT_DIR = Path(os.environ.get("RECLAIM_AWS_RACE",
                                  Path(__file__).resolve().parents[2] / "shared" / "aws-race"))
ACCOUNT = kinds.ACCOUNT  # moto's account for every access key
APPROVER = ApprovalInput(actor="bob", role=Role.APPROVER, comment="race: approved as it asked")
SUBMITTER = "alice"


@dataclass(frozen=True)
class Category:
    kind: str
    params: dict[str, Any]
    monthly_savings: float
    trap: bool = False
    """The end state keeps it as it is: Reclaim must refuse it."""


#: manifest category -> the recommendation a recommender that reads only tags and types makes.
CATEGORIES: dict[str, Category] = {
    "idle_instances": Category("ec2.stop", {"expected_instance_type": "t3.large"}, 60.0),
    # env=production (half of them also Idle=true): listed by an Idle-tag recommender, refused by policy
    "prod_instances": Category("ec2.stop", {"expected_instance_type": "t3.large"}, 60.0, trap=True),
    "unattached_volumes": Category("ebs.delete", {"expected_volume_type": "gp2", "expected_size_gib": 100}, 10.0),
    "attached_gp2": Category("ebs.gp2_to_gp3", {"expected_volume_type": "gp2"}, 2.0),
    "eips_unassociated": Category("eip.release", {}, 3.6),
    # associated with production instances: listed by a recommender of every EIP, refused (in use)
    "eips_associated": Category("eip.release", {}, 3.6, trap=True),
    "rds_oversized": Category("rds.rightsize", {"expected_instance_class": "db.m5.xlarge",
                                                "target_instance_class": "db.m5.large"}, 150.0),
    # untagged: nothing in AWS says to keep it, so Reclaim has nothing to refuse it on; listed only
    # with --race-naive-rds (a recommender that resizes every db.m5.xlarge), which verify then fails
    "rds_keep": Category("rds.rightsize", {"expected_instance_class": "db.m5.xlarge",
                                           "target_instance_class": "db.m5.large"}, 150.0, trap=True),
}
#: A trap's expected item status: refused by policy, an answer (REJECTED_BY_VALIDATION counts as
#: a failure in the plan: the refusal kind was lost on the way).
REFUSED = frozenset({"REFUSED"})


def recommendations(manifest: dict[str, Any], run: str, *, naive_rds: bool = False) -> list[Recommendation]:
    """Every manifest entry as a recommendation of its category's kind, traps included, the
    categories interleaved (as a recommender's list mixes them). Id: `<run>.<category>.<n>`."""
    columns: list[list[Recommendation]] = []
    for category, spec in CATEGORIES.items():
        if category not in manifest or (category == "rds_keep" and not naive_rds):
            continue
        ids = [(region, rid) for region in manifest["regions"] for rid in manifest[category].get(region, [])]
        columns.append([Recommendation(
            id=f"{run}.{category}.{n}", customer_id="race", account_id=ACCOUNT, region=region, kind=spec.kind,
            resource_id=rid, params=dict(spec.params), estimated_monthly_savings=spec.monthly_savings,
            source="race") for n, (region, rid) in enumerate(ids)])
    return [rec for row in itertools.zip_longest(*columns) for rec in row if rec is not None]


def category_of(rec_id: str) -> str:
    return rec_id.split(".")[1]


# ---- the aws-race tools -------------------------------------------------------------------


def tools_missing(race_dir: Path) -> str | None:
    """Why the race cannot run here, or None."""
    for script in ("mockaws.py", "account.py", "verify.py", "boto3_baseline.py", "limit.py"):
        if not (race_dir / script).exists():
            return f"{race_dir / script} not found (--race-dir or $RECLAIM_AWS_RACE)"
    return None


def _env() -> dict[str, str]:
    """Dummy credentials only: never a real profile."""
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}


def _tool(race_dir: Path, script: str, *args: str, check: bool = True, timeout: float = 1800) -> str:
    done = subprocess.run([sys.executable, str(race_dir / script), *args], capture_output=True, text=True,
                          env={**os.environ, **_env()}, timeout=timeout, cwd=race_dir)
    if check and done.returncode != 0:
        raise RuntimeError(f"{script} exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


@contextmanager
def mockaws(race_dir: Path, logdir: Path, name: str) -> Iterator[tuple[str, int]]:
    """A fresh `mockaws.py --throttle` (buckets off until `throttle(.., "on")`): endpoint and pid."""
    port = free_port()
    args = [sys.executable, str(race_dir / "mockaws.py"), "-p", str(port), "--throttle", "--throttle-start", "off"]
    with procs.running(name, args, logdir, port, env={"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}) as proc:
        yield f"http://127.0.0.1:{port}", proc.pid


def throttle(endpoint: str, mode: str | None = None) -> dict[str, Any]:
    """The buckets' counts; with `mode`, switch first (on/count refill and zero them)."""
    url = f"{endpoint}/_harness/throttle" + (f"?mode={mode}" if mode else "")
    with urllib.request.urlopen(urllib.request.Request(url, method="POST" if mode else "GET"), timeout=30) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


def seed(race_dir: Path, endpoint: str, n: int, out: Path) -> dict[str, Any]:
    _tool(race_dir, "account.py", "--endpoint", endpoint, "--scale", str(n), "--out", str(out))
    manifest: dict[str, Any] = json.loads(out.read_text())
    return manifest


def verify(race_dir: Path, endpoint: str, manifest: Path) -> dict[str, Any]:
    line = _tool(race_dir, "verify.py", "--endpoint", endpoint, "--manifest", str(manifest), check=False)
    try:
        answer: dict[str, Any] = json.loads(line.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"verify": "FAIL", "output": line[-2000:]}
    return answer


_BOUND = re.compile(r"^(?P<title>.+): lower_bound_s=(?P<bound>[0-9.]+) api_calls=(?P<calls>[0-9]+)$")
_BINDING = re.compile(r"^\s+(?P<region>\S+)\s+(?P<bucket>\S+)\s+calls=\s*(?P<calls>[0-9]+).*<- binding$")


def limit(race_dir: Path, *args: str) -> dict[str, Any]:
    """`limit.py` parsed: the bound, the calls it counted, the binding buckets."""
    out: dict[str, Any] = {"binding": []}
    for line in _tool(race_dir, "limit.py", *args).splitlines():
        if (m := _BOUND.match(line)) and "lower_bound_s" not in out:
            out.update(lower_bound_s=float(m["bound"]), api_calls=int(m["calls"]))
        elif m := _BINDING.match(line):
            out["binding"].append(f"{m['region']}:{m['bucket']} ({m['calls']} calls)")
    return out


def aws_counts(report: dict[str, Any]) -> dict[str, Any]:
    per = report["counts"]
    allowed = sum(v["allowed"] for v in per.values())
    throttled = sum(v["throttled"] for v in per.values())
    return {"requests": allowed + throttled, "allowed": allowed, "throttled": throttled,
            "per_bucket": {k: f"{v['allowed']}/{v['throttled']}" for k, v in per.items()}}


# ---- the two runs -------------------------------------------------------------------------


class Race:
    def __init__(self, bench: Bench, client: Client, queue: str, server_pid: int, address: str) -> None:
        self.bench, self.client, self.queue = bench, client, queue
        self.server_pid, self.address = server_pid, address
        self.args, self.logdir = bench.args, bench.logdir
        self.race_dir: Path = self.args.race_dir or DEFAULT_DIR
        self.n: int = self.args.race_n

    async def run(self) -> dict[str, Any]:
        missing = tools_missing(self.race_dir)
        if missing:
            raise SystemExit(f"race: {missing}")
        reclaim = await self.reclaim()
        baseline = await asyncio.to_thread(self.baseline)
        bound = await asyncio.to_thread(limit, self.race_dir, str(self.n))
        reclaim["calls_bound"] = await asyncio.to_thread(limit, self.race_dir, "--counts", reclaim.pop("counts_file"))
        out: dict[str, Any] = {
            "scale": self.n, "items": reclaim["items"],
            "reclaim": reclaim, "baseline": baseline, "baseline_lower_bound": bound,
            "reclaim_to_baseline_wall": round(reclaim["wall_s"] / baseline["wall_s"], 3),
            "reclaim_to_baseline_requests": round(reclaim["aws"]["requests"] / baseline["aws"]["requests"], 3),
            "reclaim_wall_to_baseline_bound": (round(reclaim["wall_s"] / bound["lower_bound_s"], 3)
                                               if bound["lower_bound_s"] else None),
            "targets": {"wall_to_bound_max": 1.2, "requests_to_baseline_max": 1.5, "throttled": 0,
                        "executions_per_s_min": 20.0, "cpu_ms_per_execution_max": 100.0},
        }
        problems = [f"reclaim verify: {json.dumps(reclaim['verify'])}"] if reclaim["verify"]["verify"] != "ok" else []
        problems += [f"baseline verify: {json.dumps(baseline['verify'])}"] if baseline["verify"]["verify"] != "ok" else []
        problems += [f"reclaim item {m}" for m in reclaim["unexpected"]]
        if reclaim["plan"]["status"] != "COMPLETED":
            problems.append(f"reclaim plan {reclaim['plan']['status']}: {reclaim['plan']['reason']}")
        out["ok"] = not problems
        out["problems"] = problems
        return out

    async def reclaim(self) -> dict[str, Any]:
        logdir, run = self.logdir, f"race-{self.bench.run_id}"
        with mockaws(self.race_dir, logdir, "mockaws-reclaim") as (endpoint, moto_pid):
            manifest_file = logdir / "manifest-reclaim.json"
            manifest = await asyncio.to_thread(seed, self.race_dir, endpoint, self.n, manifest_file)
            recs = recommendations(manifest, run, naive_rds=self.args.race_naive_rds)
            env = {**self.bench.worker_env(self.address, endpoint), "RECLAIM_AWS_BUDGET_SHARE": "1",
                   "RECLAIM_AWS_COALESCE_WINDOW_MS": str(self.args.race_window_ms)}
            async with worker_store(self.bench.home) as store:
                plans, executions = Plans(self.client, self.queue, store), Executions(self.client, self.queue)
                with procs.worker(logdir, env, name="worker-race") as worker:
                    # imports, the workflow sandbox, first clients: not the race (throttle still off)
                    await self.bench._engine(executions, "racewarm", await asyncio.to_thread(
                        kinds.seed, endpoint, self.args.warmup, ["ebs.gp2_to_gp3"]))
                    await asyncio.sleep(2)  # the worker's budget refills what the warm-up spent
                    pids = {"worker": worker.pid, "server": self.server_pid, "mockaws": moto_pid,
                            "bench_client": os.getpid()}
                    throttle(endpoint, "on")
                    cpu0 = {k: procs.cpu_seconds(pid) for k, pid in pids.items()}
                    t0 = time.perf_counter()
                    view, approvals = await self._plan(plans, executions, recs, run)
                    wall = time.perf_counter() - t0
                    cpu1 = {k: procs.cpu_seconds(pid) for k, pid in pids.items()}
                    report = throttle(endpoint)
                    throttle(endpoint, "off")
                    items = await store.plans.items(view.plan_id)
                ledger = worker_ledger(worker.log)
            counts_file = logdir / "throttle-reclaim.json"
            counts_file.write_text(json.dumps(report))
            checked = await asyncio.to_thread(verify, self.race_dir, endpoint, manifest_file)
        n = len(recs)
        cpu = {k: round((cpu1[k] - cpu0[k]) / n * 1000, 2) for k in cpu0}
        by_category: dict[str, Counter[str]] = {}
        unexpected: list[str] = []
        for item in items:
            category = category_of(item.recommendation.id)
            by_category.setdefault(category, Counter())[item.status] += 1
            want = REFUSED if CATEGORIES[category].trap else frozenset({"COMPLETED"})
            if item.status not in want:
                unexpected.append(f"{category} {item.recommendation.resource_id} ({item.recommendation.region}): "
                                  f"{item.status} {item.reason or ''}".strip())
        return {
            "items": n, "wall_s": round(wall, 2), "executions_per_s": round(n / wall, 2),
            "plan": {"status": view.status.value, "reason": view.reason, "counts": view.counts},
            "by_category": {k: dict(v) for k, v in sorted(by_category.items())},
            "unexpected": unexpected[:20], "unexpected_total": len(unexpected),
            "approvals": approvals,
            "aws": aws_counts(report), "verify": checked, "counts_file": str(counts_file),
            "calls": ledger,
            "cpu_ms_per_execution": {**cpu, "worker_plus_server": round(cpu["worker"] + cpu["server"], 2)},
            "worker": {"aws_budget_share": 1, "coalesce_window_ms": self.args.race_window_ms,
                       "patient_window_ms": Settings().aws_patient_window_ms,  # the worker's env is ours
                       "max_concurrency": self.args.race_concurrency},
        }

    async def _plan(self, plans: Plans, executions: Executions, recs: list[Recommendation],
                    run: str) -> tuple[Any, dict[str, Any]]:
        """Submit the plan; approve what waits for a person, in batches, until the plan ends."""
        spec = PlanSpec(id=run, name=f"race N={self.n}", strategy=Strategy.PARALLEL,
                        rate=RateControl(max_concurrency=Quota(value=self.args.race_concurrency)),
                        options=ExecutionOptions(auto_approve=True, rollback_window=timedelta(0),
                                                 retain_backups=True))
        view = await plans.submit(spec, requested_by=SUBMITTER, recommendations=recs,
                                  policy=Settings().policy())
        approved: set[str] = set()
        refused: list[str] = []
        batches, waits = 0, []  # how long an item waited for bob, first seen -> approved
        query = ('WorkflowType="ExecutionWorkflow" AND ExecutionStatus="Running" '
                 f'AND ReclaimStatus="AWAITING_APPROVAL" AND TaskQueue="{self.queue}"')
        gate = asyncio.Semaphore(16)

        async def approve(execution_id: str, seen: float) -> None:
            async with gate:
                try:
                    await executions.decide(execution_id, True, APPROVER)
                    approved.add(execution_id)
                    waits.append(time.perf_counter() - seen)
                except ReclaimError as exc:
                    refused.append(f"{execution_id}: {exc}")

        deadline = time.monotonic() + self.args.race_timeout
        while True:
            view = await plans.progress(view.plan_id)
            if view.status in PLAN_TERMINAL:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"race: plan {view.plan_id} still {view.status.value} after "
                                 f"{self.args.race_timeout:.0f} s: {view.counts}")
            seen = time.perf_counter()
            waiting = [w.id async for w in self.client.list_workflows(query)
                       if run in w.id and w.id not in approved]
            if waiting:
                batches += 1
                await asyncio.gather(*(approve(i, seen) for i in waiting))
            else:
                await asyncio.sleep(0.25)
        return view, {"approved": len(approved), "batches": batches, "refused": len(refused),
                      "first_refusals": refused[:3],
                      "wait_p50_s": round(sorted(waits)[len(waits) // 2], 2) if waits else None}

    def baseline(self) -> dict[str, Any]:
        """run_baseline.sh's steps with THROTTLE=1, on a fresh server and account."""
        with mockaws(self.race_dir, self.logdir, "mockaws-baseline") as (endpoint, _):
            manifest_file = self.logdir / "manifest-baseline.json"
            seed(self.race_dir, endpoint, self.n, manifest_file)
            throttle(endpoint, "on")
            t0 = time.perf_counter()
            out = _tool(self.race_dir, "boto3_baseline.py", "--endpoint", endpoint, "--workers", "16", check=False)
            outer = time.perf_counter() - t0
            report = throttle(endpoint)
            throttle(endpoint, "off")
            checked = verify(self.race_dir, endpoint, manifest_file)
        try:
            peer: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            peer = {"wall_s": outer, "errors": -1, "output": out[-1000:]}
        return {"wall_s": peer["wall_s"], "process_wall_s": round(outer, 2), "counts": peer.get("counts"),
                "errors": peer.get("errors"), "aws": aws_counts(report), "verify": checked}


def worker_ledger(log: Path) -> dict[str, Any]:
    """The worker's AWS calls by phase and operation (its shutdown line, activities/gateway/ledger.py),
    with each phase's share of the gateway's batches, as its reads that were not answered fresh:
    `requests_by_phase` (the warm-up included)."""
    found = [line.split(LEDGER_LINE, 1)[1] for line in log.read_text(errors="replace").splitlines()
             if LEDGER_LINE in line]
    if not found:
        return {"missing": f"no ledger line in {log}"}
    ledger: dict[str, Any] = json.loads(found[-1])
    by_phase: Counter[str] = Counter()
    by_operation: Counter[str] = Counter()
    batched = ledger["sent"].get(GATEWAY, {})
    for where, ops in ledger["sent"].items():
        for op, n in ops.items():
            by_operation[op] += n
            if where != GATEWAY:
                by_phase[where] += n
    for op, sent in batched.items():  # shared by the phases that asked, as they asked
        remembered = ledger.get("remembered_by_phase", {})
        askers = {where: sum(n - remembered.get(where, {}).get(method, 0) for method, n in ops.items()
                             if operation_name(method.split(" ")[0]) == op)
                  for where, ops in ledger["asked"].items()}
        total = sum(askers.values())
        for where, n in askers.items():
            if n:
                by_phase[where] += sent * n / total
        if not total:
            by_phase[GATEWAY] += sent
    ledger["requests_by_phase"] = {k: round(v, 1) for k, v in by_phase.most_common()}
    ledger["requests_by_operation"] = dict(by_operation.most_common())
    return ledger


@asynccontextmanager
async def worker_store(home: Path) -> AsyncIterator[Store]:
    """The worker's store (RECLAIM_HOME's SQLite file, or DATABASE_URL)."""
    store = await Store.open(Settings(home=home).database())
    try:
        yield store
    finally:
        await store.close()


def table_rows(race: dict[str, Any]) -> list[tuple[str, str]]:
    r, b, bound = race["reclaim"], race["baseline"], race["baseline_lower_bound"]
    cpu = r["cpu_ms_per_execution"]
    return [
        (f"race N={race['scale']}: items (plan) / executions/s", f"{race['items']} / {r['executions_per_s']}"),
        ("race: wall s, Reclaim / boto3 baseline", f"{r['wall_s']} / {b['wall_s']}"),
        ("race: baseline lower bound s (binding)", f"{bound['lower_bound_s']} ({', '.join(bound['binding'])})"),
        ("race: bound of Reclaim's own calls s", f"{r['calls_bound']['lower_bound_s']}"),
        ("race: AWS requests, Reclaim / baseline", f"{r['aws']['requests']} / {b['aws']['requests']}"),
        ("race: throttled, Reclaim / baseline", f"{r['aws']['throttled']} / {b['aws']['throttled']}"),
        ("race: Reclaim / baseline wall, requests",
         f"{race['reclaim_to_baseline_wall']}, {race['reclaim_to_baseline_requests']}"),
        ("race: Reclaim wall / baseline bound", f"{race['reclaim_wall_to_baseline_bound']}"),
        ("race: CPU ms/execution worker+server (mockaws)", f"{cpu['worker_plus_server']} ({cpu['mockaws']})"),
        ("race: verify Reclaim / baseline", f"{r['verify']['verify']} / {b['verify']['verify']}"),
        ("race: Reclaim per bucket allowed/throttled", " ".join(f"{k}={v}" for k, v in r["aws"]["per_bucket"].items())),
        ("race: Reclaim requests by phase (incl. warm-up)",
         " ".join(f"{k}={v:g}" for k, v in r.get("calls", {}).get("requests_by_phase", {}).items())),
        ("race: Reclaim reads answered fresh, no call",
         " ".join(f"{k}={v}" for k, v in r.get("calls", {}).get("remembered", {}).items())),
        ("race: baseline per bucket allowed/throttled", " ".join(f"{k}={v}" for k, v in b["aws"]["per_bucket"].items())),
    ]
