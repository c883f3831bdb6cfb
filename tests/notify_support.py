"""Local receivers for the notification tests: an HTTP server that records every request, an SMTP server."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from domain.notifications import Links, Notification


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)  # arrival, seconds since the epoch (the history's clock)


@dataclass
class HttpReceiver:
    """Answers `status` (200 by default) to every POST and keeps what it got."""

    url: str
    requests: list[Received] = field(default_factory=list)
    status: int = 200


@contextmanager
def http_receiver() -> Iterator[HttpReceiver]:
    state = HttpReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append(Received(self.path, dict(self.headers.items()), body))
            self.send_response(state.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class SlackApi:
    """A local Slack Web API: `POST /api/chat.postMessage` as Slack answers it.

    HTTP 200 and `{"ok": true, "channel", "ts", "message"}` when the bearer token is `token` and the
    channel one of `channels`; else HTTP 200 and `{"ok": false, "error": "not_authed" | "invalid_auth" |
    "channel_not_found" | "invalid_json"}`. `replies` are answered first, one per request, in order:
    (HTTP status, headers, JSON body), for rate limits and outages. `url` is what `api_url` is set to.
    """

    url: str
    token: str
    channels: set[str]
    requests: list[Received] = field(default_factory=list)
    replies: list[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    posted: int = 0

    def answer(self, path: str, auth: str | None, body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
        if self.replies:
            return self.replies.pop(0)
        if path != "/api/chat.postMessage":
            return 404, {}, {"ok": False, "error": "unknown_method"}
        if auth is None:
            return 200, {}, {"ok": False, "error": "not_authed"}
        if auth != f"Bearer {self.token}":
            return 200, {}, {"ok": False, "error": "invalid_auth"}
        try:
            sent = json.loads(body)
        except ValueError:
            return 200, {}, {"ok": False, "error": "invalid_json"}
        if sent.get("channel") not in self.channels:
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        self.posted += 1
        return 200, {}, {"ok": True, "channel": sent["channel"], "ts": f"1764927000.{self.posted:06d}",
                         "message": {"type": "message", "text": sent.get("text"), "blocks": sent.get("blocks")}}


@contextmanager
def slack_api(token: str, channels: set[str]) -> Iterator[SlackApi]:
    state = SlackApi(url="", token=token, channels=channels)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append(Received(self.path, dict(self.headers.items()), body))
            status, extra, answer = state.answer(self.path, self.headers.get("Authorization"), body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json; charset=utf-8", **extra}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/api"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    at: float = field(default_factory=time.time)  # arrival, seconds since the epoch


class MailBox:
    """An aiosmtpd handler keeping every accepted message."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 OK"


@contextmanager
def smtp_receiver(users: dict[str, str]) -> Iterator[tuple[MailBox, int]]:
    """A local aiosmtpd server on a free port that accepts `users`' LOGIN/PLAIN (no TLS) and keeps every mail."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    from starter.devserver import free_port

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and users.get(data.login.decode()) == data.password.decode()
        return AuthResult(success=ok, handled=False)

    box, port = MailBox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, authenticator=authenticate,
                            auth_require_tls=False)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, for the STARTTLS test."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def approval_request(**overrides: Any) -> Notification:
    fields: dict[str, Any] = dict(
        event="approval_requested", subject_id="exec-rec-42", at=datetime(2026, 12, 5, 9, 30, tzinfo=UTC),
        customer_id="acme", account_id="123456789012", region="us-east-1", kind="ebs.delete",
        resource_id="vol-0abc", resource_tags={"Owner": "olive@example.com, oscar@example.com", "Team": "data"},
        risk="HIGH", risk_reasons=["deletes data", "savings above the auto-approval limit"],
        estimated_monthly_savings=812.5, planned_steps=["snapshot vol-0abc", "delete vol-0abc"],
        links=Links(web_ui="http://localhost:8233/namespaces/default/workflows/exec-rec-42",
                    approval_page="http://localhost:8000/approvals/exec-rec-42"),
    )
    return Notification(**{**fields, **overrides})


def catch_all_notify_file(folder: Path, url: str, secret_env: str = "RECLAIM_TEST_WEBHOOK_SECRET") -> Path:
    """A notify file telling one webhook everything (its secret in `secret_env`, set here)."""
    import os

    os.environ.setdefault(secret_env, "test-webhook-secret")
    path = folder / "notify.yaml"
    path.write_text(f"channels:\n  audit:\n    type: webhook\n    url: {url}/\n    secret: env:{secret_env}\n"
                    "rules:\n  - channels: [audit]\n")
    return path
