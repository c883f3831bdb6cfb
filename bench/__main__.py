"""`make bench`: throughput, approval latency, API latency, parked scale and CPU per execution.

Each part runs against real processes: the Temporal dev server (file database,
WAL pragmas), moto_server in its own process, the project's worker in its own
process (`bench.worker`, so its RSS and CPU are its own), and for the API part
PostgreSQL plus `reclaim api`. Baselines are measured in the same run, because
the machine's load varies: compare the ratios, not the absolute figures.
Prints one JSON object and a table; saves the JSON under bench/results/
(timestamped, and latest.json).

    python -m bench [--only throughput,approval,api,parked,race] [--n 1000] [--approvals 200]
                    [--compare-n 300] [--api-rows 100000] [--parked 10000] [--race-n 100]

`race` runs one plan of every change a wasteful account needs against moto behind AWS's
throttling buckets, then the boto3 baseline on a fresh account (bench/race.py); it needs
the aws-race tools (../shared/aws-race or --race-dir) and is left out, with a note, when
they are not there and no --only names it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench import kinds, procs
from domain.execution import ApprovalInput, ExecutionView
from domain.policy import Role
from domain.status import ExecutionStatus as S
from runtime.settings import Settings
from runtime.temporal_client import connect_when_ready
from starter.devserver import dev_server, free_port
from starter.executions import Executions

PARTS = ("throughput", "approval", "api", "parked", "race")
TASK_QUEUE = "bench"
TARGETS = {"throughput_per_s": 20.0, "approval_p99_ms": 150.0, "worker_rss_parked_mib": 300.0, "api_p99_ms": 50.0}
T = TypeVar("T")
CHANGING = frozenset({S.BACKING_UP, S.APPLYING, S.VERIFYING, S.COMPLETED, S.FAILED, S.ROLLED_BACK})


async def bounded(items: Iterable[T], fn: Callable[[T], Awaitable[Any]], limit: int) -> list[Any]:
    """`fn` over `items` with at most `limit` in flight, results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> Any:
        async with gate:
            return await fn(item)

    return await asyncio.gather(*(one(i) for i in items))


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _summary(values: list[float]) -> dict[str, Any]:
    return {"p50": round(statistics.median(values), 1), "p99": round(_pct(values, 99), 1),
            "max": round(max(values), 1), "n": len(values)}


async def awaiting_approval(client: Client, count: int, timeout: float) -> int:
    """Wait until `count` running executions await approval (visibility, not one status query each:
    thousands of queries would load the machine more than what is measured); how many do at the end."""
    query = (f'WorkflowType="ExecutionWorkflow" AND ExecutionStatus="Running" AND ReclaimStatus="AWAITING_APPROVAL" '
             f'AND TaskQueue="{TASK_QUEUE}"')
    deadline, parked = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        parked = (await client.count_workflows(query)).count
        if parked >= count:
            break
        await asyncio.sleep(1)
    return parked


class Bench:
    def __init__(self, args: argparse.Namespace, logdir: Path, home: Path, moto_pid: int) -> None:
        self.args, self.logdir, self.home, self.moto_pid = args, logdir, home, moto_pid
        self.run_id = datetime.now(UTC).strftime("%H%M%S")

    def worker_env(self, address: str, endpoint: str) -> dict[str, str]:
        env = {"TEMPORAL_ADDRESS": address, "RECLAIM_TASK_QUEUE": TASK_QUEUE, "AWS_ENDPOINT_URL": endpoint,
               "RECLAIM_HOME": str(self.home), "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": kinds.REGION, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        if not self.args.no_pycache:
            # The workflow sandbox imports the workflow modules afresh for every workflow instance; without
            # bytecode (PYTHONDONTWRITEBYTECODE=1 and an editable install, as on the CI machines) it compiles
            # their source each time. A pip-installed image has .pyc files: so does the measured worker.
            env.update(PYTHONDONTWRITEBYTECODE="", PYTHONPYCACHEPREFIX=str(self.home / "pycache"))
        return env

    # ---- 1 + 5: throughput, baseline, CPU per execution ------------------------------------

    async def _engine(self, executions: Executions, tag: str, targets: list[kinds.Target]) -> float:
        """All submitted at once (or at most --in-flight running at a time), each awaited to its end."""

        async def one(item: tuple[int, kinds.Target]) -> ExecutionView:
            started = await executions.start(kinds.request(f"{self.run_id}-{tag}", item[0], item[1]))
            return await executions.handle(started.execution_id).result()

        start = time.perf_counter()
        if self.args.in_flight:
            views = await bounded(list(enumerate(targets)), one, self.args.in_flight)
        else:
            started = await bounded(list(enumerate(targets)), lambda it: executions.start(
                kinds.request(f"{self.run_id}-{tag}", it[0], it[1])), 200)
            views = await asyncio.gather(*(executions.handle(s.execution_id).result() for s in started))
        elapsed = time.perf_counter() - start
        bad = [f"{v.kind}: {v.status.value} {v.reason}" for v in views if v.status is not S.COMPLETED]
        if bad:
            raise SystemExit(f"{len(bad)} executions did not complete: {bad[:3]}")
        return elapsed

    async def throughput(self, client: Client, server_pid: int, address: str, endpoint: str) -> dict[str, Any]:
        n = self.args.n
        engine_targets, base_targets = kinds.seed(endpoint, n), kinds.seed(endpoint, n)  # moto holds both sets
        me = os.getpid()
        base_cpu0 = {"moto": procs.cpu_seconds(self.moto_pid), "bench_threads": procs.cpu_seconds(me)}
        base = kinds.baseline(endpoint, base_targets)
        base_cpu = {"moto": procs.cpu_seconds(self.moto_pid), "bench_threads": procs.cpu_seconds(me)}
        base_cpu = {k: round((base_cpu[k] - base_cpu0[k]) / n * 1000, 2) for k in base_cpu}
        executions = Executions(client, TASK_QUEUE)
        with procs.worker(self.logdir, self.worker_env(address, endpoint)) as worker:
            await self._engine(executions, "warm", kinds.seed(endpoint, self.args.warmup))  # imports, sandbox, first clients
            pids = {"worker": worker.pid, "server": server_pid, "moto": self.moto_pid, "bench_client": me}
            cpu0 = {k: procs.cpu_seconds(pid) for k, pid in pids.items()}
            elapsed = await self._engine(executions, "tp", engine_targets)
            cpu1 = {k: procs.cpu_seconds(pid) for k, pid in pids.items()}
            worker_rss = procs.rss_mib(worker.pid)
        rate = n / elapsed
        cpu = {k: round((cpu1[k] - cpu0[k]) / n * 1000, 2) for k in cpu0}
        result: dict[str, Any] = {
            "executions": n, "in_flight": self.args.in_flight or n, "kinds": list(kinds.KINDS),
            "seconds": round(elapsed, 1),
            "engine_per_s": round(rate, 2), "baseline_per_s": round(base["per_s"], 2),
            "engine_to_baseline": round(rate / base["per_s"], 3),
            "vs_target_20_per_s": round(rate / TARGETS["throughput_per_s"], 3),
            "cpu_ms_per_execution": {**cpu, "worker_plus_server": round(cpu["worker"] + cpu["server"], 2),
                                     "total": round(sum(cpu.values()), 2)},
            "baseline_cpu_ms_per_execution": {**base_cpu, "total": round(sum(base_cpu.values()), 2)},
            "worker_rss_mib_after": round(worker_rss, 1),
            "moto": "own process (moto_server)",
        }
        if self.args.compare_n:
            result["moto_in_process"] = await self._moto_in_process(client, address)
            result["moto_in_process"]["engine_separate_to_in_process"] = round(
                rate / result["moto_in_process"]["engine_per_s"], 3)
        return result

    async def _moto_in_process(self, client: Client, address: str) -> dict[str, Any]:
        """The same at --compare-n with moto on a thread of the process that calls it (worker, baseline)."""
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        m = self.args.compare_n
        port = free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        moto.start()
        try:
            endpoint = f"http://127.0.0.1:{port}"
            base = kinds.baseline(endpoint, kinds.seed(endpoint, m))
        finally:
            moto.stop()
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        with procs.worker(self.logdir, self.worker_env(address, endpoint), moto_port=port, name="worker-moto"):
            targets = kinds.seed(endpoint, m)
            executions = Executions(client, TASK_QUEUE)
            await self._engine(executions, "warm2", kinds.seed(endpoint, self.args.warmup))
            elapsed = await self._engine(executions, "inproc", targets)
        rate = m / elapsed
        return {"executions": m, "engine_per_s": round(rate, 2), "baseline_per_s": round(base["per_s"], 2),
                "engine_to_baseline": round(rate / base["per_s"], 3)}

    # ---- 2: approval latency ----------------------------------------------------------------

    async def approval(self, client: Client, address: str, endpoint: str) -> dict[str, Any]:
        executions = Executions(client, TASK_QUEUE)
        out: dict[str, Any] = {"measure": "approve sent (client clock) -> backup activity started (history); "
                                          "one approval at a time, the next once the previous left AWAITING_APPROVAL",
                               "interval_s": self.args.approval_interval}
        with procs.worker(self.logdir, self.worker_env(address, endpoint), name="worker-approval"):
            await self._engine(executions, "warm3", kinds.seed(endpoint, self.args.warmup))
            for path in ("signal", "update"):
                latencies = await self._approvals(client, executions, path, kinds.seed(endpoint, self.args.approvals))
                out[path] = {**_summary(latencies),
                             "vs_target_150_ms_p99": round(_pct(latencies, 99) / TARGETS["approval_p99_ms"], 3)}
        return out

    async def _approvals(self, client: Client, executions: Executions, path: str,
                         targets: list[kinds.Target]) -> list[float]:
        tag = f"{self.run_id}-{path}"
        started = await bounded(list(enumerate(targets)), lambda it: executions.start(
            kinds.request(tag, it[0], it[1], auto=False)), 100)
        if await awaiting_approval(client, len(started), timeout=600) < len(started):
            raise SystemExit(f"{path}: not all {len(started)} executions reached AWAITING_APPROVAL")
        approver = ApprovalInput(actor="bob", role=Role.APPROVER)
        sent: dict[str, float] = {}
        from workflows.execution import ExecutionWorkflow

        for s in started:  # one approval at a time: latency, not the queue an approval burst would build
            sent[s.execution_id] = time.time()
            if path == "update":
                await executions.decide(s.execution_id, True, approver)
            else:
                await executions.handle(s.execution_id).signal(ExecutionWorkflow.approve_signal, approver)
            await executions.wait(s.execution_id, until=CHANGING, timeout=120)  # pacing only: polled
            await asyncio.sleep(self.args.approval_interval)
        await asyncio.gather(*(executions.handle(s.execution_id).result() for s in started))

        async def latency(execution_id: str) -> float:
            scheduled: int | None = None
            async for event in client.get_workflow_handle(execution_id).fetch_history_events():
                if (event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                        and event.activity_task_scheduled_event_attributes.activity_type.name == "backup"):
                    scheduled = event.event_id
                if (scheduled is not None and event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
                        and event.activity_task_started_event_attributes.scheduled_event_id == scheduled):
                    return (event.event_time.ToDatetime(UTC).timestamp() - sent[execution_id]) * 1000
            raise RuntimeError(f"{execution_id}: no backup activity in its history")

        return list(await bounded(list(sent), latency, 20))

    # ---- 4: parked scale --------------------------------------------------------------------

    async def parked(self, client: Client, server_pid: int, address: str, endpoint: str) -> dict[str, Any]:
        count = self.args.parked
        seed_t0 = time.perf_counter()
        targets = kinds.seed(endpoint, count)
        seed_s = time.perf_counter() - seed_t0
        executions = Executions(client, TASK_QUEUE)
        server_before = procs.rss_mib(server_pid)
        env = {**self.worker_env(address, endpoint), "RECLAIM_MAX_CACHED_WORKFLOWS": str(self.args.parked_cache)}
        with procs.worker(self.logdir, env, name="worker-parked") as worker:
            worker_idle = procs.rss_mib(worker.pid)
            tag = f"{self.run_id}-park"
            t0 = time.perf_counter()
            started = await bounded(list(enumerate(targets)), lambda it: executions.start(
                kinds.request(tag, it[0], it[1], auto=False)), 100)
            submitted_s = time.perf_counter() - t0
            parked = await awaiting_approval(client, count, timeout=1800)
            parked_s = time.perf_counter() - t0
            await asyncio.sleep(2)
            figures = {"worker_rss_mib": round(procs.rss_mib(worker.pid), 1),
                       "worker_peak_rss_mib": round(procs.peak_rss_mib(worker.pid), 1),
                       "server_rss_mib": round(procs.rss_mib(server_pid), 1)}
            clean_t0 = time.perf_counter()
            await bounded(started, lambda s: executions.handle(s.execution_id).terminate("bench clean-up"), 100)
            clean_s = time.perf_counter() - clean_t0
        return {"executions": count, "parked": parked, "max_cached_workflows": self.args.parked_cache, "seed_seconds": round(seed_s, 1),
                "seconds_to_submit_all": round(submitted_s, 1), "seconds_until_all_awaiting_approval": round(parked_s, 1),
                "starts_per_s": round(count / parked_s, 1),
                "worker_rss_mib_idle": round(worker_idle, 1), **figures,
                "server_rss_mib_before": round(server_before, 1),
                "worker_rss_vs_target_300_mib": round(figures["worker_rss_mib"] / TARGETS["worker_rss_parked_mib"], 3),
                "terminate_seconds": round(clean_s, 1)}


def save(result: dict[str, Any], directory: Path) -> None:
    """The timestamped file and latest.json; called after every part, so a stopped run keeps what it measured."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    (directory / f"bench-{result['when'].replace(':', '')}.json").write_text(text)
    (directory / "latest.json").write_text(text)


def progress(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Every part in turn; SIGTERM and SIGINT stop it cleanly (the child processes too)."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        if task is not None:
            loop.add_signal_handler(sig, task.cancel)
    return await _main(args)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    parts = [p.strip() for p in (args.only or ",".join(PARTS)).split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION=kinds.REGION)
    os.environ.pop("AWS_PROFILE", None)
    home = Path(tempfile.mkdtemp(prefix="reclaim-bench-"))
    logdir = home / "logs"
    logdir.mkdir()
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "temporal": "dev server, SQLite file + WAL pragmas",
        "read_model": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "SQLite file",
        "worker_bytecode": "none (PYTHONDONTWRITEBYTECODE inherited)" if args.no_pycache else "cached (.pyc)",
        "logs": str(logdir) if args.keep else None,
        "complete": False,
    }
    if args.only is None and "race" in parts:
        from bench import race

        missing = race.tools_missing(args.race_dir or race.DEFAULT_DIR)
        if missing:
            parts.remove("race")
            result["race_skipped"] = missing
    with procs.moto_server(logdir) as (endpoint, moto_pid), \
            dev_server(home, ui_port=None, persistent=True) as server:
        bench = Bench(args, logdir, home, moto_pid)
        client = await connect_when_ready(Settings(temporal_address=server.address))
        if "throughput" in parts:
            progress("throughput")
            result["throughput"] = await bench.throughput(client, server.process.pid, server.address, endpoint)
            save(result, args.results)
        if "approval" in parts:
            progress("approval")
            result["approval"] = await bench.approval(client, server.address, endpoint)
            save(result, args.results)
        if "api" in parts:
            from bench import api

            progress("api")
            result["api"] = await api.run(logdir, server.address, rows=args.api_rows, requests=args.api_requests,
                                          database_url=os.environ.get("DATABASE_URL"))
            worst = max(result["api"][k]["p99_ms"] for k in ("get_one", "list_first_page", "list_filtered"))
            result["api"]["worst_p99_vs_target_50_ms"] = round(worst / TARGETS["api_p99_ms"], 3)
            save(result, args.results)
        if "parked" in parts:
            progress("parked")
            result["parked"] = await bench.parked(client, server.process.pid, server.address, endpoint)
            save(result, args.results)
        if "race" in parts:
            from bench import race

            progress(f"race N={args.race_n}")
            result["race"] = await race.Race(bench, client, TASK_QUEUE, server.process.pid, server.address).run()
            save(result, args.results)
            if not result["race"]["ok"]:  # saved first: the figures and what went wrong stay on record
                raise SystemExit("race: " + "; ".join(result["race"]["problems"])[:4000])
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["complete"] = True
    if not args.keep:  # on failure the folder stays, with the logs of every process
        shutil.rmtree(home, ignore_errors=True)
    return result


def table(result: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    if "throughput" in result:
        t = result["throughput"]
        rows += [(f"executions/s, engine (N={t['executions']})", f"{t['engine_per_s']}"),
                 ("executions/s, boto3 thread-pool baseline", f"{t['baseline_per_s']}"),
                 ("engine / baseline", f"{t['engine_to_baseline']}"),
                 ("engine / target (20/s)", f"{t['vs_target_20_per_s']}"),
                 ("CPU ms/execution worker+server (all)", "{worker_plus_server} ({total})".format(
                     **t["cpu_ms_per_execution"])),
                 ("CPU ms/execution, baseline (moto+threads)", "{total}".format(**t["baseline_cpu_ms_per_execution"]))]
        if "moto_in_process" in t:
            m = t["moto_in_process"]
            rows += [(f"moto in-process: engine, baseline /s (N={m['executions']})",
                      f"{m['engine_per_s']}, {m['baseline_per_s']}"),
                     ("engine with moto apart / in-process", f"{m['engine_separate_to_in_process']}")]
    if "approval" in result:
        for path in ("signal", "update"):
            a = result["approval"][path]
            rows.append((f"approve->backup p50/p99 ms ({path})", f"{a['p50']}/{a['p99']}"))
    if "api" in result:
        for name in ("get_one", "list_first_page", "list_filtered", "list_first_page_before_vacuum"):
            a = result["api"][name]
            rows.append((f"API {name} p50/p99 ms ({result['api']['rows']} rows)", f"{a['p50_ms']}/{a['p99_ms']}"))
    if "parked" in result:
        p = result["parked"]
        rows += [(f"parked {p['parked']} (cache {p['max_cached_workflows']}): worker RSS MiB (peak)", f"{p['worker_rss_mib']} ({p['worker_peak_rss_mib']})"),
                 ("parked: server RSS MiB (before)", f"{p['server_rss_mib']} ({p['server_rss_mib_before']})"),
                 ("parked: s until all awaiting approval", f"{p['seconds_until_all_awaiting_approval']}")]
    if "race" in result:
        from bench import race

        rows += race.table_rows(result["race"])
    width = max(len(r[0]) for r in rows) + 2 if rows else 10
    return "\n".join([f"{'measure':<{width}}value", *(f"{k:<{width}}{v}" for k, v in rows)])


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=None,
                        help=f"comma-separated parts: {', '.join(PARTS)} (default: all; race if its tools are there)")
    parser.add_argument("--n", type=int, default=1000, help="throughput executions (and baseline calls)")
    parser.add_argument("--in-flight", type=int, default=0,
                        help="throughput: at most this many executions running at once (0: all submitted at once)")
    parser.add_argument("--compare-n", type=int, default=300,
                        help="executions for the moto-in-process comparison (0: skip)")
    parser.add_argument("--warmup", type=int, default=8, help="executions each new worker runs before measuring")
    parser.add_argument("--approvals", type=int, default=200, help="executions per approval path")
    parser.add_argument("--approval-interval", type=float, default=0.0,
                        help="extra seconds between one approval's backup and the next approval")
    parser.add_argument("--api-rows", type=int, default=100_000)
    parser.add_argument("--api-requests", type=int, default=500, help="requests per API endpoint")
    parser.add_argument("--parked", type=int, default=10_000,
                        help="executions parked awaiting approval (about 6 minutes here)")
    parser.add_argument("--parked-cache", type=int, default=250,
                        help="parked: the worker's RECLAIM_MAX_CACHED_WORKFLOWS (runs kept in memory; default 1000)")
    parser.add_argument("--no-pycache", action="store_true",
                        help="workers inherit PYTHONDONTWRITEBYTECODE (sandbox imports compile source every time)")
    parser.add_argument("--race-n", type=int, default=100, help="race: account.py --scale N")
    parser.add_argument("--race-window-ms", type=float, default=50.0,
                        help="race: the worker's RECLAIM_AWS_COALESCE_WINDOW_MS")
    parser.add_argument("--race-concurrency", type=int, default=100, help="race: the plan's max concurrency")
    parser.add_argument("--race-timeout", type=float, default=1800, help="race: longest wait for the plan, s")
    parser.add_argument("--race-naive-rds", action="store_true",
                        help="race: also list the untagged db.m5.xlarge (rds_keep) for rightsizing")
    parser.add_argument("--race-dir", type=Path, default=None,
                        help="race: the aws-race tools (default $RECLAIM_AWS_RACE or ../shared/aws-race)")
    parser.add_argument("--keep", action="store_true", help="keep the databases and logs (a temporary folder)")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    result = asyncio.run(main(args))
    save(result, args.results)
    print(json.dumps(result))
    print()
    print(table(result))
    return result


if __name__ == "__main__":
    run()
