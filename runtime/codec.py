"""Payload encryption: every payload Reclaim writes to Temporal is AES-256-GCM ciphertext.

Each payload (its metadata and data, serialized) is sealed under a 32-byte key with a fresh
random 12-byte nonce; the key's id rides in clear in the payload's metadata, and is also the
associated data, so a payload cannot be passed off as sealed under another key. Several keys
are known at once: the newest seals, any known one opens, so keys rotate while executions run.
Keys come from a list (`RECLAIM_CODEC_KEYS`, `RECLAIM_CODEC_KEYS_FILE`) or are data keys of
AWS KMS (`runtime/codec_kms.py`).

Nothing here falls back to plaintext: no key to seal with stops the process at start-up, a
payload sealed under an unknown key (or tampered with) raises `CodecError`, and a payload that
arrives unencrypted is refused unless `RECLAIM_CODEC_ACCEPT_PLAINTEXT` says otherwise.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

if TYPE_CHECKING:
    from runtime.settings import Settings

ENCODING = b"binary/encrypted"
CIPHER = b"AES256-GCM"
META_ENCODING = "encoding"
META_KEY_ID = "encryption-key-id"
META_CIPHER = "encryption-cipher"
META_DATA_KEY = "encryption-data-key"  # a KMS data key, wrapped (only KMS can open it)
NONCE_BYTES = 12
KEY_BYTES = 32
KEYS_FILE_NAME = "codec-keys"
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

log = logging.getLogger("reclaim.codec")


class CodecError(Exception):
    """A payload this process cannot open, or cannot seal: never answered with plaintext instead."""


class CodecConfigError(CodecError):
    """Encryption is asked for but its keys are missing or malformed (said at start-up, in one line)."""


@dataclass(frozen=True)
class DataKey:
    key_id: str
    key: bytes = field(repr=False)
    wrapped: bytes | None = field(default=None, repr=False)  # KMS: the key as KMS sealed it

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise CodecConfigError(f"key {self.key_id!r} is {len(self.key)} bytes; AES-256 needs {KEY_BYTES}")


class Keyring(ABC):
    """Where keys come from: one to seal with, and a look-up of the key that sealed a payload."""

    @abstractmethod
    async def sealing_key(self) -> DataKey: ...

    @abstractmethod
    async def opening_key(self, key_id: str, wrapped: bytes | None) -> DataKey: ...

    def secrets(self) -> list[str]:
        """Key material as text, for the log masking to hide wherever it might surface."""
        return []


class StaticKeyring(Keyring):
    """Keys given by the operator, newest first: the first seals, every one opens."""

    def __init__(self, keys: Sequence[DataKey]) -> None:
        if not keys:
            raise CodecConfigError("no encryption key given")
        ids = [k.key_id for k in keys]
        if len(set(ids)) != len(ids):
            raise CodecConfigError(f"key ids must be unique: {', '.join(ids)}")
        self._keys = {k.key_id: k for k in keys}
        self._newest = keys[0]

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    async def sealing_key(self) -> DataKey:
        return self._newest

    async def opening_key(self, key_id: str, wrapped: bytes | None) -> DataKey:
        try:
            return self._keys[key_id]
        except KeyError:
            raise CodecError(f"payload sealed with key {key_id!r}, which this process does not have "
                             f"(known: {', '.join(self._keys)})") from None

    def secrets(self) -> list[str]:
        return [base64.b64encode(k.key).decode() for k in self._keys.values()]


class CombinedKeyring(Keyring):
    """KMS data keys seal; payloads sealed under listed keys before the move to KMS still open."""

    def __init__(self, sealing: Keyring, others: Keyring) -> None:
        self._sealing, self._others = sealing, others

    async def sealing_key(self) -> DataKey:
        return await self._sealing.sealing_key()

    async def opening_key(self, key_id: str, wrapped: bytes | None) -> DataKey:
        chosen = self._sealing if wrapped is not None else self._others
        return await chosen.opening_key(key_id, wrapped)

    def secrets(self) -> list[str]:
        return self._sealing.secrets() + self._others.secrets()


def parse_keys(text: str, where: str) -> list[DataKey]:
    """`id=base64key` entries, newest first, separated by commas or lines; `#` starts a comment.

    Errors name the entry (never its key material)."""
    keys = []
    entries = [e.strip() for line in text.splitlines() for e in line.split("#", 1)[0].split(",")]
    for number, entry in enumerate((e for e in entries if e), start=1):
        key_id, sep, material = entry.partition("=")
        key_id = key_id.strip()
        if not sep or not _KEY_ID.match(key_id):
            raise CodecConfigError(f"{where}: entry {number}: expected id=base64key with an id of letters, digits, "
                                   "'.', '_' or '-'")
        try:
            raw = base64.b64decode(material.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise CodecConfigError(f"{where}: key {key_id!r} is not valid base64") from None
        keys.append(DataKey(key_id, raw))
    if not keys:
        raise CodecConfigError(f"{where}: no key in it")
    return keys


def new_key_line(key_id: str) -> str:
    """A fresh key entry (`id=base64`) for a keys file or RECLAIM_CODEC_KEYS."""
    if not _KEY_ID.match(key_id):
        raise CodecConfigError(f"key id {key_id!r}: letters, digits, '.', '_' or '-' only (at most 64)")
    return f"{key_id}={base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads, a random nonce each, the key id in clear in the metadata."""

    def __init__(self, keyring: Keyring, *, accept_plaintext: bool = False) -> None:
        self.keyring = keyring
        self.accept_plaintext = accept_plaintext
        self._plaintext_warned = False

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if not payloads:
            return []
        key = await self.keyring.sealing_key()
        aead = AESGCM(key.key)
        sealed = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            metadata = {META_ENCODING: ENCODING, META_CIPHER: CIPHER, META_KEY_ID: key.key_id.encode()}
            if key.wrapped is not None:
                metadata[META_DATA_KEY] = key.wrapped
            data = nonce + aead.encrypt(nonce, payload.SerializeToString(), key.key_id.encode())
            sealed.append(Payload(metadata=metadata, data=data))
        return sealed

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        opened = []
        for index, payload in enumerate(payloads):
            if payload.metadata.get(META_ENCODING) != ENCODING:
                opened.append(self._plaintext(payload, index))
                continue
            key_id = payload.metadata.get(META_KEY_ID, b"").decode("utf-8", "replace")
            if not key_id:
                raise CodecError(f"payload {index}: encrypted but names no key")
            if payload.metadata.get(META_CIPHER, CIPHER) != CIPHER:
                raise CodecError(f"payload {index}: cipher {payload.metadata[META_CIPHER]!r} is not {CIPHER!r}")
            key = await self.keyring.opening_key(key_id, payload.metadata.get(META_DATA_KEY))
            nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
            try:
                plain = AESGCM(key.key).decrypt(nonce, sealed, key_id.encode())
            except InvalidTag:
                raise CodecError(f"payload {index}: does not open with key {key_id!r} (another key under "
                                 "that id, or the payload was altered)") from None
            inner = Payload()
            inner.ParseFromString(plain)
            opened.append(inner)
        return opened

    def _plaintext(self, payload: Payload, index: int) -> Payload:
        if not self.accept_plaintext:
            encoding = payload.metadata.get(META_ENCODING, b"?").decode("utf-8", "replace")
            raise CodecError(f"payload {index} is not encrypted (encoding {encoding!r}): refused "
                             "(RECLAIM_CODEC_ACCEPT_PLAINTEXT=true reads payloads written before encryption)")
        if not self._plaintext_warned:
            self._plaintext_warned = True
            log.warning("read a payload that is not encrypted (accepted: RECLAIM_CODEC_ACCEPT_PLAINTEXT is on)")
        return payload


def keyring_from_settings(settings: Settings) -> Keyring:
    """The keys the settings name: KMS (`codec_kms_key_id`), listed keys, or both (KMS seals)."""
    listed: Keyring | None = None
    if settings.codec_keys:
        listed = StaticKeyring(parse_keys(settings.codec_keys, "RECLAIM_CODEC_KEYS"))
    else:
        path = settings.codec_keys_file or default_keys_file(settings)
        if settings.codec_keys_file is not None or path.exists():
            try:
                text = path.read_text()
            except OSError as exc:
                raise CodecConfigError(f"cannot read the keys file {path} ({type(exc).__name__})") from None
            listed = StaticKeyring(parse_keys(text, str(path)))
    if settings.codec_kms_key_id:
        from runtime.codec_kms import KmsKeyring

        kms = KmsKeyring.from_settings(settings)
        return CombinedKeyring(kms, listed) if listed is not None else kms
    if listed is None:
        raise CodecConfigError("encryption is on but no key is given: set RECLAIM_CODEC_KEYS, "
                               "RECLAIM_CODEC_KEYS_FILE or RECLAIM_CODEC_KMS_KEY_ID")
    return listed


def default_keys_file(settings: Settings) -> Path:
    return settings.home / KEYS_FILE_NAME


def ensure_dev_keys(settings: Settings) -> Path | None:
    """For `reclaim dev|demo --encrypt` with no key configured: a key file in the home (mode 0600),
    made once and kept, so the dev server's history stays readable across restarts."""
    if settings.codec_keys or settings.codec_keys_file or settings.codec_kms_key_id:
        return None
    path = default_keys_file(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("# Reclaim payload keys, newest first (reclaim codec-key --id ID makes one)\n")
            out.write(new_key_line("dev-1") + "\n")
    return path


def codec_from_settings(settings: Settings) -> EncryptionCodec:
    return EncryptionCodec(keyring_from_settings(settings), accept_plaintext=settings.codec_accept_plaintext)


def data_converter(settings: Settings, base: DataConverter) -> DataConverter:
    """`base` as it is when encryption is off; else with the codec, and failure messages and stack
    traces moved into an encrypted payload too (they name resources)."""
    if not settings.encrypt:
        return base
    from dataclasses import replace

    from runtime.logmask import register_secret

    codec = codec_from_settings(settings)
    for secret in codec.keyring.secrets():
        register_secret(secret)
    return replace(base, payload_codec=codec, failure_converter_class=DefaultFailureConverterWithEncodedAttributes)
