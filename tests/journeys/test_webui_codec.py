"""The Web UI reads encrypted payloads through the codec server, in a real browser (Debian's chromium).

The stack is `reclaim dev --encrypt`'s: the dev server's UI pointed at the codec server
(`--ui-codec-endpoint`), the worker and client sealing every payload. The screenshot is kept in
artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from playwright.async_api import async_playwright

from activities.aws import SessionFactory
from domain.status import ExecutionStatus as S
from runtime.settings import Settings
from runtime.temporal_client import connect_when_ready
from starter.codec_server import codec_running, dev_codec
from starter.devserver import dev_server, free_port
from starter.executions import Executions
from store.repository import Store
from tests.conftest import AwsAccount
from tests.helpers import recommendation, request
from tests.journeys.test_webui import ARTIFACTS, CHROMIUM, PAGE_TIMEOUT_MS, shown
from worker import build_worker


async def test_the_web_ui_shows_an_encrypted_executions_input_decoded(
    tmp_path: Path, moto_endpoint: str, aws: AwsAccount, store: Store, activity_executor: ThreadPoolExecutor
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    ui_port = free_port()
    settings = Settings(home=tmp_path)
    codec = dev_codec(settings, free_port(), ui_port)
    with dev_server(tmp_path / "server", ui_port=ui_port, persistent=False,
                    ui_codec_endpoint=codec.ui_endpoint) as server:
        assert server.ui_url is not None
        settings.temporal_address = server.address
        client = await connect_when_ready(settings)
        task_queue = f"tq-ui-codec-{uuid.uuid4()}"
        worker = build_worker(client, task_queue=task_queue, sessions=SessionFactory(endpoint_url=moto_endpoint),
                              store=store, executor=activity_executor)
        async with codec_running(codec), worker:
            executions = Executions(client, task_queue)
            instance = aws.instance()
            rec = recommendation("ec2.stop", instance, savings=42.5)
            eid = (await executions.start(request(rec, auto_approve=False))).execution_id
            assert (await executions.wait(eid)).status is S.AWAITING_APPROVAL
            history = await client.get_workflow_handle(eid).fetch_history()
            assert instance.encode() not in history.events[0].SerializeToString()  # sealed in the history
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    page = await browser.new_page(viewport={"width": 1440, "height": 1400})
                    await page.goto(f"{server.ui_url}/namespaces/default/workflows/{eid}")
                    await page.get_by_text("User Metadata").first.click(timeout=PAGE_TIMEOUT_MS)
                    summary = await shown(page, f"ec2.stop {instance}")  # the summary, decoded
                    assert "for acme, $42.50/month" in summary
                    await page.screenshot(path=str(ARTIFACTS / "webui-encrypted-summary-decoded.png"), full_page=True)
                    # The input, decoded (Event History shows the workflow's input above the events).
                    await page.get_by_text("Event History").first.click(timeout=PAGE_TIMEOUT_MS)
                    # (the input's viewer renders only the lines in view: the recommendation comes first)
                    for text in (f'"id": "{rec.id}"', f'"resource_id": "{instance}"', '"customer_id": "acme"'):
                        await shown(page, text)
                    await page.screenshot(path=str(ARTIFACTS / "webui-encrypted-input-decoded.png"), full_page=True)
                finally:
                    await browser.close()
            await client.get_workflow_handle(eid).terminate(reason="test over")
