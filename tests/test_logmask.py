"""The log masking filter: AWS keys, session tokens, bearer tokens, webhook URLs, registered secrets."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from runtime import logmask

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQDexample"
SLACK = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose handler is added after install(), as uvicorn's are: records reach it masked."""
    logmask.install()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test.logmask.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


@pytest.mark.parametrize(("line", "secret"), [
    (f"credentials {ACCESS_KEY}/20261205/us-east-1/ec2/aws4_request", ACCESS_KEY),
    ("temporary ASIAY34FZKBOKMUTVV7A in use", "ASIAY34FZKBOKMUTVV7A"),
    (f"aws_secret_access_key = {SECRET_KEY}", SECRET_KEY),
    (f'{{"SecretAccessKey": "{SECRET_KEY}"}}', SECRET_KEY),
    ("headers={'X-Amz-Security-Token': b'FaultSessionTokenABCDEFGH0123'}", "FaultSessionTokenABCDEFGH0123"),
    (f"token {SESSION}", SESSION),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJl", "eyJhbGciOiJIUzI1NiJ9"),
    (f"posting to {SLACK} failed", "T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"),
    ("teams https://acme.webhook.office.com/webhookb2/abc-123@def/IncomingWebhook/xyz", "abc-123@def"),
    ("flow https://prod-12.westus.logic.azure.com:443/workflows/abc/triggers/manual?sig=s3cr3tSIGvalue", "s3cr3tSIG"),
    ("hook https://hooks.example.com/reclaim?token=abcdef0123456789", "abcdef0123456789"),
    ("slack token xoxb-1234-5678-abcdefghijkl", "xoxb-1234-5678"),
    ("dsn postgresql://reclaim:hunter2pass@db:5432/reclaim", "hunter2pass"),
    ("key -----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "MIIEow"),
    ("password=correct-horse-battery", "correct-horse-battery"),
])
def test_secrets_are_masked_by_their_shape(logged: tuple[logging.Logger, io.StringIO], line: str,
                                           secret: str) -> None:
    logger, stream = logged
    logger.warning(line)
    assert secret not in stream.getvalue() and logmask.MASK in stream.getvalue(), stream.getvalue()


def test_registered_secrets_arguments_and_tracebacks_are_masked(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    logmask.register_secret("plain-hmac-secret-42")
    logmask.register_secret("short")  # too short to mask by value: ordinary words would vanish
    logger.info("sending with %s to %s", "plain-hmac-secret-42", "a short list")
    try:
        raise RuntimeError("refused: plain-hmac-secret-42")
    except RuntimeError:
        logger.exception("delivery failed")
    out = stream.getvalue()
    assert "plain-hmac-secret-42" not in out and out.count(logmask.MASK) >= 2 and "RuntimeError: refused: ***" in out
    assert "a short list" in out


def test_ordinary_lines_are_left_alone(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    ordinary = ("worker polling task queue reclaim; i-0123456789abcdef0 stopped; "
                "sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709; https://hooks.example.com/reclaim")
    logger.info(ordinary)
    assert stream.getvalue().strip() == ordinary


def test_every_process_installs_it() -> None:
    """The worker, the CLI (which runs `reclaim api`, `dev`, `demo`, `worker`, `codec-server`) and the API."""
    code = ("import logging, sys\n"
            "from typer.testing import CliRunner\n"
            "from starter.cli import app\n"
            "CliRunner().invoke(app, ['actions', '--json'])\n"
            "logging.getLogger('x').warning('key AKIAIOSFODNN7EXAMPLE, secret %s', 'env-secret-value-123')\n")
    env = {"PATH": "/usr/bin:/bin", "RECLAIM_OPS_HOOK_SECRET": "env-secret-value-123", "HOME": "/tmp"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "AKIA***" in done.stderr and "AKIAIOSFODNN7EXAMPLE" not in done.stderr
    assert "env-secret-value-123" not in done.stderr, done.stderr
    import ast
    from pathlib import Path

    root = Path(__file__).parent.parent
    for path, function in [("worker.py", "run_worker"), ("starter/cli.py", "_global"),
                            ("starter/api/app.py", "lifespan")]:
        tree = ast.parse((root / path).read_text())
        found = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                     and n.name == function)
        assert "logmask.install()" in ast.unparse(found), f"{path}:{function} does not install the masking"
