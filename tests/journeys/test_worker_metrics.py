"""The worker process serves its delivery metrics: `python -m worker` with RECLAIM_WORKER_METRICS_PORT
delivers an execution's notification to one local receiver that takes it and one that refuses it;
scraping the worker over HTTP then shows sent, failed and latency for each of the two channels."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from domain.status import ExecutionStatus as S
from starter.devserver import free_port, port_open
from starter.executions import Executions
from tests.conftest import AwsAccount
from tests.fault_support import stop_process
from tests.helpers import recommendation, request
from tests.notify_support import HttpReceiver, http_receiver

ROOT = Path(__file__).parents[2]


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample the endpoint serves, by (name, labels), read over HTTP as Prometheus would."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_the_worker_serves_sent_failed_and_latency_per_channel(
    client: Client, aws: AwsAccount, receiver: HttpReceiver, tmp_path: Path,
) -> None:
    task_queue, port = f"metrics-{uuid.uuid4()}", free_port()
    notify = tmp_path / "notify.yaml"
    with http_receiver() as refusing:
        refusing.status = 400  # a permanent refusal: one failed attempt, not retried
        notify.write_text(f"channels:\n"
                          f"  ops-hook: {{type: webhook, url: '{receiver.url}/hook', secret: env:T_METRICS_HOOK}}\n"
                          f"  dead-hook: {{type: webhook, url: '{refusing.url}/hook', secret: env:T_METRICS_HOOK}}\n"
                          f"rules:\n  - channels: [ops-hook, dead-hook]\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RECLAIM_", "TEMPORAL_"))}
        env.update(TEMPORAL_ADDRESS=client.service_client.config.target_host, RECLAIM_TASK_QUEUE=task_queue,
                   DATABASE_URL=f"sqlite:///{tmp_path / 'reclaim.db'}", AWS_ENDPOINT_URL=aws.endpoint,
                   AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   RECLAIM_NOTIFY_FILE=str(notify), T_METRICS_HOOK="metrics-hook-secret",
                   RECLAIM_WORKER_METRICS_PORT=str(port))
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while "worker polling task queue" not in log.read_text():
                assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)
            url = f"http://127.0.0.1:{port}/metrics"
            assert f"worker metrics at {url}" in log.read_text()
            before = scrape(url)  # served, and nothing delivered yet
            assert sample(before, "reclaim_notifications_sent_total", channel="ops-hook", type="webhook",
                          status="sent") is None

            executions = Executions(client, task_queue)
            instance = aws.instance()
            started = await executions.start(request(
                recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"}),
                auto_approve=True, rollback_window=timedelta(0)))
            # The run closes once its deliveries are done or given up: both attempts have been counted.
            view = await asyncio.wait_for(executions.handle(started.execution_id).result(), 90)
            assert view.status is S.COMPLETED
            assert [r.path for r in receiver.requests] == ["/hook"] and len(refusing.requests) == 1

            after = scrape(url)
            print(f"\nscraped {url}:", *(f"{n}{dict(sorted(labels))} {v}" for (n, labels), v in after.items()
                                          if n.endswith(("_total", "_count", "_sum"))), sep="\n  ")
            assert sample(after, "reclaim_notifications_sent_total", channel="ops-hook", type="webhook",
                          status="sent") == 1
            assert sample(after, "reclaim_notifications_failed_total", channel="dead-hook", type="webhook",
                          retryable="false") == 1
            assert sample(after, "reclaim_notifications_sent_total", channel="dead-hook", type="webhook",
                          status="sent") is None
            for channel in ("ops-hook", "dead-hook"):
                assert sample(after, "reclaim_notification_send_seconds_count", channel=channel, type="webhook") == 1
                took = sample(after, "reclaim_notification_send_seconds_sum", channel=channel, type="webhook")
                assert took is not None and 0 < took < 10
                assert sample(after, "reclaim_notification_send_seconds_bucket", channel=channel, type="webhook",
                              le="+Inf") == 1
        finally:
            code = stop_process(worker)
    assert code == 0, log.read_text()
    assert not port_open("127.0.0.1", port)  # the endpoint went down with the worker
    assert "metrics-hook-secret" not in log.read_text()
