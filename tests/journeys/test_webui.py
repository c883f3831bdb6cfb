"""The Temporal Web UI as a person sees it, in a real browser (Debian's chromium, driven by Playwright).

An execution awaiting approval must show its summary (kind, resource, customer, savings)
and its current details, including exactly how to approve it. Screenshots are kept in
artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, async_playwright

from activities.aws import SessionFactory
from domain.status import ExecutionStatus as S
from runtime.settings import Settings
from runtime.temporal_client import connect_when_ready
from starter.devserver import dev_server, free_port, webui_executions_path
from starter.executions import Executions
from store.repository import Store
from tests.conftest import AwsAccount
from tests.helpers import recommendation, request
from worker import build_worker

CHROMIUM = "/usr/bin/chromium"
EXECUTIONS_LIST = webui_executions_path()
ARTIFACTS = Path(__file__).parents[2] / "artifacts"
PAGE_TIMEOUT_MS = 90_000  # the UI is a single-page app that polls the server: bounded, generous on a loaded machine


async def shown(page: Page, text: str) -> str:
    """The page's visible text once it shows `text` (the app renders as its polls answer)."""
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    while True:
        # The UI renders Markdown (summary, details) in sandboxed frames of its own: read them all.
        texts = []
        for frame in page.frames:
            with contextlib.suppress(PlaywrightError):
                texts.append(await frame.inner_text("body", timeout=5_000))
        body = " ".join(" ".join(texts).split())
        if text in body:
            return body
        assert time.monotonic() < deadline, f"the page never showed {text!r}:\n{body[:2000]}"
        await page.wait_for_timeout(500)


async def test_the_web_ui_shows_each_executions_summary_and_how_to_approve_it(
    tmp_path: Path, moto_endpoint: str, aws: AwsAccount, store: Store, activity_executor: ThreadPoolExecutor
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with dev_server(tmp_path / "server", ui_port=free_port(), persistent=False) as server:
        assert server.ui_url is not None
        client = await connect_when_ready(Settings(temporal_address=server.address))
        task_queue = f"tq-ui-{uuid.uuid4()}"
        worker = build_worker(client, task_queue=task_queue, sessions=SessionFactory(endpoint_url=moto_endpoint),
                              store=store, executor=activity_executor)
        async with worker:
            executions = Executions(client, task_queue)
            instance = aws.instance()
            rec = recommendation("ec2.stop", instance, savings=42.5)
            started = await executions.start(request(rec, auto_approve=False))
            assert (await executions.wait(started.execution_id)).status is S.AWAITING_APPROVAL
            eid = started.execution_id
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    page = await browser.new_page(viewport={"width": 1440, "height": 1100})
                    await page.goto(f"{server.ui_url}/namespaces/default/workflows/{eid}")
                    await page.get_by_text("User Metadata").first.click(timeout=PAGE_TIMEOUT_MS)
                    body = await shown(page, f"reclaim approve {eid}")
                    await page.screenshot(path=str(ARTIFACTS / "webui-execution-awaiting-approval.png"), full_page=True)
                    assert f"ec2.stop {instance}" in body and "for acme, $42.50/month" in body  # the summary
                    assert "AWAITING_APPROVAL" in body and f"/api/v1/executions/{eid}/approve" in body
                    assert f"temporal workflow update execute --workflow-id {eid} --name approve" in body
                    assert "submitted $42.50/month" in body  # dollars stay dollars (not read as math)

                    # The operator's list: executions only, resource leases (internal) out of the way.
                    await page.goto(f"{server.ui_url}{EXECUTIONS_LIST}")
                    listed = await shown(page, eid)
                    assert "lease-" not in listed
                    await page.screenshot(path=str(ARTIFACTS / "webui-workflow-list.png"), full_page=True)
                finally:
                    await browser.close()
            await executions.cancel(eid)
