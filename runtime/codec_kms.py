"""Payload keys from AWS KMS: envelope encryption with data keys, cached for a bounded time.

Sealing uses a data key from `GenerateDataKey` (AES_256) under the configured KMS key; the
key KMS wrapped travels in each payload's metadata, so any process whose credentials may
`Decrypt` with that KMS key opens it. A data key seals for `codec_kms_cache_seconds`, then a new
one is asked; opened data keys are remembered as long (and at most `max_keys` of them), so
KMS sees a handful of calls per process and window, not one per payload.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runtime.codec import CodecError, DataKey, Keyring

if TYPE_CHECKING:
    from runtime.settings import Settings

#: Bound into every data key: a key KMS made for something else does not open Reclaim's payloads.
ENCRYPTION_CONTEXT = {"purpose": "reclaim-temporal-payloads"}


def kms_key_id(wrapped: bytes) -> str:
    """The id a wrapped data key goes by in payload metadata (a digest: the blob itself rides along)."""
    return "kms-" + hashlib.sha256(wrapped).hexdigest()[:24]


class KmsKeyring(Keyring):
    def __init__(self, kms_key: str, client: Callable[[], Any], *, cache_seconds: float = 300.0,
                 max_keys: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self._kms_key = kms_key
        self._make_client = client
        self._client: Any = None
        self._ttl = cache_seconds
        self._max = max_keys
        self._clock = clock
        self._sealing: tuple[DataKey, float] | None = None
        self._opened: OrderedDict[str, tuple[DataKey, float]] = OrderedDict()
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> KmsKeyring:
        import boto3

        def client() -> Any:
            return boto3.client("kms", region_name=settings.codec_kms_region,
                                endpoint_url=settings.aws_endpoint_url)

        assert settings.codec_kms_key_id is not None
        return cls(settings.codec_kms_key_id, client, cache_seconds=settings.codec_kms_cache_seconds)

    def _kms(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    async def sealing_key(self) -> DataKey:
        async with self._lock:
            now = self._clock()
            if self._sealing is None or self._sealing[1] <= now:
                answer = await self._call("GenerateDataKey", self._kms().generate_data_key, KeyId=self._kms_key,
                                          KeySpec="AES_256", EncryptionContext=ENCRYPTION_CONTEXT)
                wrapped = bytes(answer["CiphertextBlob"])
                key = DataKey(kms_key_id(wrapped), bytes(answer["Plaintext"]), wrapped)
                self._sealing = (key, now + self._ttl)
                self._remember(key, now)
            return self._sealing[0]

    async def opening_key(self, key_id: str, wrapped: bytes | None) -> DataKey:
        if wrapped is None or kms_key_id(wrapped) != key_id:
            raise CodecError(f"payload names KMS data key {key_id!r} but does not carry it")
        now = self._clock()
        cached = self._opened.get(key_id)
        if cached is not None and cached[1] > now:
            self._opened.move_to_end(key_id)
            return cached[0]
        answer = await self._call("Decrypt", self._kms().decrypt, CiphertextBlob=wrapped,
                                  EncryptionContext=ENCRYPTION_CONTEXT)
        key = DataKey(key_id, bytes(answer["Plaintext"]), wrapped)
        self._remember(key, now)
        return key

    def _remember(self, key: DataKey, now: float) -> None:
        self._opened[key.key_id] = (key, now + self._ttl)
        self._opened.move_to_end(key.key_id)
        while len(self._opened) > self._max:
            self._opened.popitem(last=False)

    async def _call(self, what: str, call: Callable[..., Any], **params: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        from activities.errors import client_error_code

        try:
            return dict(await asyncio.to_thread(call, **params))
        except ClientError as exc:  # the code only: KMS's message may quote the key's policy
            raise CodecError(f"KMS {what} refused ({client_error_code(exc)}) for key {self._kms_key}") from None
        except BotoCoreError as exc:
            raise CodecError(f"KMS {what} failed: {type(exc).__name__}") from None
