"""No secret in a log line: AWS keys, session tokens, bearer tokens, webhook URLs, registered secrets.

`install()` puts `SecretFilter` on every log record this process makes (through the record
factory, so handlers added later, uvicorn's included, are covered too): the message, its
arguments and any traceback are formatted and masked when the record is made. Secrets known
by value (the process's AWS secret key and session token, API and codec tokens, codec keys,
the notify file's secrets) are registered with `register_secret` and masked wherever they stand;
the patterns catch the rest by their shape. Every entry point (worker, CLI, API, codec server)
installs it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from typing import Any

MASK = "***"
#: Shorter values are not masked by value: "testing" or "demo" would blank out ordinary words.
MIN_SECRET_LENGTH = 8

_SEP = r"""(["']?\s*[:=]\s*b?["']?)"""
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # AWS access key ids (long-term AKIA, temporary ASIA, and the other principal prefixes)
    (re.compile(r"\b(AKIA|ASIA|AROA|AIDA|AGPA|AIPA|ANPA|ANVA|APKA|ABIA|ACCA)[A-Z0-9]{16}\b"), r"\1" + MASK),
    # secret keys and session tokens by their names (env, botocore's headers, JSON, repr)
    (re.compile(r"(?i)(aws_secret_access_key|secret_?access_?key|aws_session_token|session_?token"
                r"|x-amz-security-token)" + _SEP + r"[A-Za-z0-9/+=]{16,}"), r"\1\2" + MASK),
    # STS session tokens by their shape
    (re.compile(r"\b(?:FwoGZXIvYXdzE|IQoJb3JpZ2luX2Vj)[A-Za-z0-9/+=]+"), MASK),
    (re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1\2" + MASK),
    (re.compile(r"(?i)(\b(?:api[_-]?key|token|password|passwd|secret)" + _SEP + r")[^\s'\",&;]{8,}"), r"\1" + MASK),
    # webhook URLs are credentials: whoever has one can post
    (re.compile(r"https?://(?:hooks\.slack\.com/|[\w.-]*\.webhook\.office\.com/|[\w.-]*\.logic\.azure\.com[:/]"
                r"|(?:discord|discordapp)\.com/api/webhooks/|outlook\.office\.com/webhook)[^\s'\"<>]*"),
     "<webhook URL " + MASK + ">"),
    (re.compile(r"([?&](?:token|key|sig|signature|secret|code|access_token|api_key|apikey)=)[^&\s'\"<>]+",
                re.IGNORECASE), r"\1" + MASK),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]+"), "xox-" + MASK),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL),
     "<private key " + MASK + ">"),
    # a password in a URL (postgresql://user:pw@host)
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"), r"\1" + MASK + "@"),
]
#: Environment variables whose values are secrets whatever they hold.
_SECRET_ENV = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|CODEC_KEYS|WEBHOOK)", re.IGNORECASE)

_lock = threading.Lock()
_known: set[str] = set()
_known_pattern: re.Pattern[str] | None = None
_installed = False


def register_secret(value: str | None) -> None:
    """Mask `value` wherever it appears in a log line of this process from now on."""
    global _known_pattern
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if value in _known:
            return
        _known.add(value)
        ordered = sorted(_known, key=len, reverse=True)  # a longer secret before one it contains
        _known_pattern = re.compile("|".join(re.escape(v) for v in ordered))


def mask(text: str) -> str:
    known = _known_pattern
    if known is not None:
        text = known.sub(MASK, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_formatter = logging.Formatter()


class SecretFilter(logging.Filter):
    """Masks a record in place (message, arguments, traceback, stack); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: leave it for the handler to report as logging does
            return True
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return True


_filter = SecretFilter()


def register_environment(environ: dict[str, str] | None = None) -> None:
    """The process's own secrets from its environment: AWS keys and tokens, and any variable
    named like a secret (…_SECRET, …_TOKEN, …_PASSWORD, …)."""
    for name, value in (os.environ if environ is None else environ).items():
        if name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN") or _SECRET_ENV.search(name):
            register_secret(value)


def install() -> None:
    """Mask every log record this process makes from now on (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _filter.filter(record)
            return record

        logging.setLogRecordFactory(factory)
    register_environment()


def configure(level: str | int | None, default: str | int = logging.INFO) -> None:
    """A process's logging: masked, and at `level` (RECLAIM_LOG_LEVEL) or its own default."""
    install()
    logging.basicConfig(level=level or default, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
