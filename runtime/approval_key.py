"""Reclaim's approval signing key, held by the steering side only (the API, its page and Slack
callback, the CLI on the embedded stack); the workers verify with the public key in each run's policy.

The key is named by reference (`env:NAME` or `file:/path`, like the notify file's secrets) and read
here, once, at start-up: the value never enters a model, a workflow input, a history or a log line.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from activities.notify.config import SecretError, resolve
from domain.signing import SignedDecision, public_key_text, sign
from runtime import logmask

_T = TypeVar("_T", bound=SignedDecision)


class ApprovalKeyError(Exception):
    """The signing key cannot be read or is not an Ed25519 private key (the reason never quotes it)."""


def parse_private_key(text: str) -> Ed25519PrivateKey:
    """PEM (PKCS#8, as `openssl genpkey -algorithm ed25519` and `reclaim approval-key` write it) or
    base64 of the 32-byte seed."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise ApprovalKeyError("the approval signing key is not a readable unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ApprovalKeyError(f"the approval signing key is {type(key).__name__.lstrip('_')}, not Ed25519")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApprovalKeyError("the approval signing key is neither PEM nor base64") from None
    if len(raw) != 32:
        raise ApprovalKeyError(f"an Ed25519 private key is 32 bytes; this one is {len(raw)}")
    return Ed25519PrivateKey.from_private_bytes(raw)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ApprovalSigner:
    """Signs a person's decision for one workflow (domain/signing.py says what is covered)."""

    key: Ed25519PrivateKey = field(repr=False)
    clock: Callable[[], datetime] = _now

    @classmethod
    def from_reference(cls, reference: str) -> ApprovalSigner:
        """The key `reference` points at; from now on its text is masked in this process's log lines
        (whatever the variable or file is called)."""
        try:
            text = resolve(reference)
            for line in text.splitlines():
                if not line.startswith("-----"):  # PEM's armour is no secret
                    logmask.register_secret(line.strip())
            key = parse_private_key(text)
            logmask.register_secret(base64.b64encode(
                key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode())
            return cls(key)
        except SecretError as exc:
            raise ApprovalKeyError(f"approval signing key {reference}: {exc}") from None
        except ApprovalKeyError as exc:
            raise ApprovalKeyError(f"approval signing key {reference}: {exc}") from None

    @property
    def public_key(self) -> str:
        return public_key_text(self.key)

    def sign(self, workflow_id: str, decision: str, payload: _T) -> _T:
        return sign(self.key, workflow_id, decision, payload, self.clock())


def new_key_file(path: Path) -> Ed25519PrivateKey:
    """A new signing key written to `path` as PEM, readable by its owner only; an existing file is kept."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key
