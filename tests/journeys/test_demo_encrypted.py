"""`reclaim demo --encrypt` as a user runs it: every scene passes with payloads sealed, and its Web UI
shows them decoded (issue 16's "the demo can run with encryption on and its Web UI shows decoded
payloads"), in a real browser (Debian's chromium). The screenshot is kept in artifacts/.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from playwright.async_api import async_playwright
from temporalio.client import Client

from starter.devserver import free_port
from tests.journeys.test_entrypoints import RECLAIM, _env
from tests.journeys.test_webui import ARTIFACTS, CHROMIUM, PAGE_TIMEOUT_MS, shown

#: The demo's scenes on a loaded 2-core machine take about a minute (55 s measured with other tests
#: beside it); four times that before the test gives up waiting for its summary.
SUMMARY_DEADLINE_S = 240.0


class Demo:
    """The demo process, its output gathered by a thread (a pipe nobody reads would stall it)."""

    def __init__(self, home: Path, port: int, ui_port: int) -> None:
        env = _env(home) | {"RECLAIM_CODEC_SERVER_PORT": str(free_port())}
        self.process = subprocess.Popen(
            [RECLAIM, "demo", "--encrypt", "--keep-up", "--port", str(port), "--ui-port", str(ui_port)],
            cwd=home, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str) -> str:
        deadline = time.monotonic() + SUMMARY_DEADLINE_S
        while text not in self.output:
            assert self.process.poll() is None, f"the demo ended ({self.process.returncode}):\n{self.output}"
            assert time.monotonic() < deadline, f"the demo never printed {text!r}:\n{self.output}"
            time.sleep(0.2)
        return self.output

    def stop(self) -> None:
        """Ctrl-C, as a person stops it; its whole group if it does not go."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)


async def test_the_encrypted_demo_passes_and_its_web_ui_shows_decoded_payloads(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    port, ui_port = free_port(), free_port()
    demo = Demo(tmp_path, port, ui_port)
    try:
        out = demo.wait_for("all outcomes as expected")
        assert "Payloads encrypted; the Web UI decodes through http://127.0.0.1:" in out
        gp3 = re.search(r"(exec-demo-\d+-gp3)\s*│\s*ebs\.gp2_to_gp3\s*│\s*(vol-[0-9a-f]+)", out)
        assert gp3 is not None, out
        eid, volume = gp3.groups()
        plain = await Client.connect(f"127.0.0.1:{port}")  # no codec: what the history store holds
        history = await plain.get_workflow_handle(eid).fetch_history()
        sealed = history.events[0].SerializeToString()
        assert volume.encode() not in sealed and b"binary/encrypted" in sealed
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": 1400})
                await page.goto(f"http://127.0.0.1:{ui_port}/namespaces/default/workflows/{eid}")
                await page.get_by_text("User Metadata").first.click(timeout=PAGE_TIMEOUT_MS)
                await shown(page, f"ebs.gp2_to_gp3 {volume}")  # the summary, decoded by the codec server
                await page.get_by_text("Event History").first.click(timeout=PAGE_TIMEOUT_MS)
                await shown(page, f'"resource_id": "{volume}"')  # the input, decoded
                await page.screenshot(path=str(ARTIFACTS / "demo-encrypted-decoded.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        demo.stop()
    assert "Traceback" not in demo.output, demo.output
