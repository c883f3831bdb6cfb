"""The demo's webhook receiver: where `reclaim demo` shows its notifications arriving.

A small HTTP server on a free local port stands in for the endpoint a team would point a `webhook`
channel at. Like a real receiver it checks each POST's `X-Reclaim-Signature` with the channel's
secret (a forged or stale one is answered 401 and does not count), then keeps what it got, appends
it to a JSONL file and lists it at `GET /`. The demo's final check asks it whether every
approval-needing scene's request arrived: an approval path that tells nobody is a failed demo.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from activities.notify.signature import HEADER, verify_signature

#: The notify file's reference to the receiver's HMAC key: the key itself never enters the file.
SECRET_ENV = "RECLAIM_DEMO_WEBHOOK_SECRET"
CHANNEL = "demo-hook"


@dataclass(frozen=True)
class Delivery:
    """One POST as the receiver saw it (a JSONL line, an item of `GET /`)."""

    received_at: str
    verified: bool
    event: str | None = None
    subject_id: str | None = None
    dedup_key: str | None = None
    title: str | None = None


class DemoReceiver:
    def __init__(self, secret: str, log: Path) -> None:
        self.secret, self.log = secret, log
        self.url = ""  # http://127.0.0.1:<port>, once serving
        self._got: list[Delivery] = []
        self._lock = threading.Lock()

    @property
    def hook_url(self) -> str:
        return f"{self.url}/hook"

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._got)

    def take(self, body: bytes, signature: str) -> Delivery:
        """Check and keep one POST: verified (the channel's key, within 5 minutes) or not."""
        verified = verify_signature(self.secret, signature, body, time.time())
        fields: dict[str, Any] = {}
        if verified:
            try:
                sent = json.loads(body)
                told = sent.get("notification") or {}
                fields = dict(event=sent.get("event"), subject_id=told.get("subject_id"),
                              dedup_key=sent.get("dedup_key"), title=sent.get("title"))
            except (ValueError, AttributeError):  # signed, but not the schema's body: kept, tells of nothing
                fields = {}
        got = Delivery(received_at=datetime.now(UTC).isoformat(timespec="milliseconds"), verified=verified, **fields)
        with self._lock:
            self._got.append(got)
            with self.log.open("a") as out:
                out.write(json.dumps(asdict(got)) + "\n")
        return got

    def told(self, event: str) -> set[str]:
        """The executions (or plans) of which a verified `event` arrived."""
        return {d.subject_id for d in self.deliveries() if d.verified and d.event == event and d.subject_id}

    async def missing(self, event: str, subject_ids: Iterable[str], timeout: float) -> set[str]:
        """Those of `subject_ids` whose `event` has not arrived within `timeout` seconds (none: all told).
        Deliveries are activities of their own, so one may still be on its way when a scene ends."""
        wanted = set(subject_ids)
        deadline = time.monotonic() + timeout
        while (left := wanted - self.told(event)) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return left


def notify_file(folder: Path, receiver: DemoReceiver) -> Path:
    """The demo's notify file: every event of its executions to the receiver, signed with SECRET_ENV's key."""
    path = folder / "notify.yaml"
    path.write_text(
        "# Written by `reclaim demo` for this run: every event to its local webhook receiver.\n"
        f"channels:\n  {CHANNEL}:\n    type: webhook\n    url: {receiver.hook_url}\n"
        f"    secret: env:{SECRET_ENV}\n"
        f"rules:\n  - channels: [{CHANNEL}]\n"
    )
    return path


@contextmanager
def demo_receiver(secret: str, log: Path) -> Iterator[DemoReceiver]:
    """Serve on a free port of 127.0.0.1 until the block ends; `log` starts empty."""
    receiver = DemoReceiver(secret, log)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            got = receiver.take(body, self.headers.get(HEADER, ""))
            self._answer(200 if got.verified else 401, {"verified": got.verified})

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("", "/hook"):
                self._answer(200, {"received": [asdict(d) for d in receiver.deliveries()]})
            else:
                self._answer(404, {"error": "not found"})

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload, indent=1).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # the demo prints its own summary
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
