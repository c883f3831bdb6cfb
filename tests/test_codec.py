"""The payload codec on its own: AES-256-GCM, a nonce each, key ids, rotation, loud failures, KMS on moto."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes

from runtime.codec import (
    ENCODING,
    META_DATA_KEY,
    META_KEY_ID,
    CodecConfigError,
    CodecError,
    DataKey,
    EncryptionCodec,
    StaticKeyring,
    codec_from_settings,
    data_converter,
    ensure_dev_keys,
    new_key_line,
    parse_keys,
)
from runtime.codec_kms import KmsKeyring, kms_key_id
from runtime.settings import Settings
from tests.helpers import REGION

SECRET_TEXT = b'{"resource_id": "i-0123456789abcdef0", "comment": "checked the graphs"}'


def key(key_id: str) -> DataKey:
    return parse_keys(new_key_line(key_id), "test")[0]


def payload(data: bytes = SECRET_TEXT) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=data)


async def test_sealed_payloads_hide_the_data_name_their_key_and_open_again() -> None:
    codec = EncryptionCodec(StaticKeyring([key("k1")]))
    sealed = await codec.encode([payload(), payload()])
    for one in sealed:
        assert one.metadata["encoding"] == ENCODING and one.metadata[META_KEY_ID] == b"k1"
        assert b"i-0123456789abcdef0" not in one.SerializeToString() and b"json/plain" not in one.data
    assert sealed[0].data[:12] != sealed[1].data[:12]  # a fresh nonce each: equal inputs, unequal ciphertexts
    assert sealed[0].data != sealed[1].data
    assert await codec.decode(sealed) == [payload(), payload()]


async def test_the_newest_key_seals_and_every_known_key_opens() -> None:
    k1, k2 = key("k1"), key("k2")
    old = await EncryptionCodec(StaticKeyring([k1])).encode([payload()])
    rotated = EncryptionCodec(StaticKeyring([k2, k1]))
    new = await rotated.encode([payload()])
    assert new[0].metadata[META_KEY_ID] == b"k2"
    assert await rotated.decode([*old, *new]) == [payload(), payload()]


async def test_an_unknown_key_a_tampered_payload_or_plaintext_fail_loudly() -> None:
    sealed = await EncryptionCodec(StaticKeyring([key("k1")])).encode([payload()])
    with pytest.raises(CodecError, match="key 'k1', which this process does not have"):
        await EncryptionCodec(StaticKeyring([key("k2")])).decode(sealed)
    with pytest.raises(CodecError, match="does not open with key 'k1'"):  # another key under the same id
        await EncryptionCodec(StaticKeyring([key("k1")])).decode(sealed)
    x = key("x")
    right = EncryptionCodec(StaticKeyring([x]))
    tampered = await right.encode([payload()])
    tampered[0].data = tampered[0].data[:-1] + bytes([tampered[0].data[-1] ^ 1])
    with pytest.raises(CodecError, match="altered"):
        await right.decode(tampered)
    relabelled = await right.encode([payload()])
    relabelled[0].metadata[META_KEY_ID] = b"k1"  # the key id is authenticated too
    with pytest.raises(CodecError):
        await EncryptionCodec(StaticKeyring([DataKey("k1", x.key)])).decode(relabelled)
    with pytest.raises(CodecError, match="not encrypted"):
        await right.decode([payload()])
    assert await EncryptionCodec(right.keyring, accept_plaintext=True).decode([payload()]) == [payload()]


def test_keys_are_parsed_newest_first_and_errors_never_echo_key_material() -> None:
    text = f"# rotated 2026-12\n{new_key_line('2026-12')}\n\n{new_key_line('2026-06')}  # previous\n"
    assert [k.key_id for k in parse_keys(text, "keys")] == ["2026-12", "2026-06"]
    inline = ",".join([new_key_line("b"), new_key_line("a")])
    assert [k.key_id for k in parse_keys(inline, "env")] == ["b", "a"]
    short = "k=" + base64.b64encode(b"0123456789abcdef").decode()
    for bad, message in [("", "no key"), ("k1", "expected id=base64key"), ("k 1=AAAA", "expected id="),
                         ("k=not base64!", "not valid base64"), (short, "16 bytes; AES-256 needs 32")]:
        with pytest.raises(CodecConfigError, match=message) as caught:
            parse_keys(bad, "RECLAIM_CODEC_KEYS")
        assert "0123456789abcdef" not in str(caught.value)
    with pytest.raises(CodecConfigError, match="unique"):
        StaticKeyring([key("k"), key("k")])


def test_encryption_on_without_a_key_stops_at_start_up(tmp_path: Path) -> None:
    settings = Settings(encrypt=True, home=tmp_path)
    with pytest.raises(CodecConfigError, match="no key is given"):
        data_converter(settings, pydantic_data_converter)
    with pytest.raises(CodecConfigError, match="cannot read the keys file"):
        data_converter(Settings(encrypt=True, codec_keys_file=tmp_path / "missing"), pydantic_data_converter)
    assert data_converter(Settings(home=tmp_path), pydantic_data_converter) is pydantic_data_converter  # off


def test_the_dev_key_file_is_made_once_private_and_then_used(tmp_path: Path) -> None:
    settings = Settings(encrypt=True, home=tmp_path)
    path = ensure_dev_keys(settings)
    assert path is not None and path.stat().st_mode & 0o777 == 0o600
    first = path.read_text()
    assert ensure_dev_keys(settings) == path and path.read_text() == first
    converter = data_converter(settings, pydantic_data_converter)
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert isinstance(converter.failure_converter, DefaultFailureConverterWithEncodedAttributes)
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class
    assert ensure_dev_keys(Settings(encrypt=True, home=tmp_path, codec_keys=new_key_line("k"))) is None


# ---- AWS KMS data keys, on moto's KMS -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kms(moto_endpoint: str) -> Iterator[tuple[Any, str, list[str]]]:
    """A KMS client on moto, a new symmetric key, and the KMS operations it was asked, in order."""
    client = boto3.client("kms", region_name=REGION, endpoint_url=moto_endpoint)
    calls: list[str] = []
    client.meta.events.register("before-call.kms.*", lambda model, **_: calls.append(model.name))
    key_id = client.create_key(Description="reclaim payloads")["KeyMetadata"]["KeyId"]
    calls.clear()
    yield client, key_id, calls


async def test_kms_data_keys_seal_open_and_are_cached_for_a_bounded_time(kms: tuple[Any, str, list[str]]) -> None:
    client, key_id, calls = kms
    clock = Clock()
    codec = EncryptionCodec(KmsKeyring(key_id, lambda: client, cache_seconds=60, clock=clock))
    first = await codec.encode([payload()])
    second = await codec.encode([payload(), payload()])
    assert calls == ["GenerateDataKey"]  # one data key for the window
    assert first[0].metadata[META_KEY_ID].startswith(b"kms-") and first[0].metadata[META_DATA_KEY]
    assert second[0].metadata[META_KEY_ID] == first[0].metadata[META_KEY_ID]
    assert await codec.decode([*first, *second]) == [payload()] * 3
    assert calls == ["GenerateDataKey"]  # the sealing key is remembered for opening too
    clock.now += 61
    third = await codec.encode([payload()])
    assert calls == ["GenerateDataKey", "GenerateDataKey"] and third[0].metadata[META_KEY_ID] != first[0].metadata[META_KEY_ID]

    # Another process (its own cache): KMS Decrypt once per data key and window.
    other = EncryptionCodec(KmsKeyring(key_id, lambda: client, cache_seconds=60, clock=clock))
    calls.clear()
    assert await other.decode([*first, *first, *third]) == [payload()] * 3
    assert calls == ["Decrypt", "Decrypt"]
    clock.now += 61
    await other.decode(first)
    assert calls == ["Decrypt", "Decrypt", "Decrypt"]


async def test_kms_refusals_and_settings(kms: tuple[Any, str, list[str]], moto_endpoint: str, tmp_path: Path) -> None:
    client, key_id, _ = kms
    sealed = await EncryptionCodec(KmsKeyring(key_id, lambda: client)).encode([payload()])
    stolen = Payload()
    stolen.CopyFrom(sealed[0])
    stolen.metadata[META_DATA_KEY] = b"not the key"
    with pytest.raises(CodecError, match="does not carry it"):
        await EncryptionCodec(KmsKeyring(key_id, lambda: client)).decode([stolen])
    forged = Payload()
    forged.CopyFrom(sealed[0])
    forged.metadata[META_DATA_KEY] = b"x" * 200
    forged.metadata[META_KEY_ID] = kms_key_id(b"x" * 200).encode()
    with pytest.raises(CodecError, match=r"KMS Decrypt refused \(\w+\)"):
        await EncryptionCodec(KmsKeyring(key_id, lambda: client)).decode([forged])
    with pytest.raises(CodecError, match=r"KMS GenerateDataKey refused \(NotFoundException\)"):
        await EncryptionCodec(KmsKeyring("alias/no-such-key", lambda: client)).encode([payload()])

    # From the settings: KMS seals; listed keys still open what they sealed before the move.
    listed = new_key_line("before-kms")
    old = await codec_from_settings(Settings(encrypt=True, codec_keys=listed, home=tmp_path)).encode([payload()])
    client.create_alias(AliasName="alias/reclaim-payloads", TargetKeyId=client.create_key()["KeyMetadata"]["KeyId"])
    settings = Settings(encrypt=True, codec_keys=listed, codec_kms_key_id="alias/reclaim-payloads", codec_kms_region=REGION,
                        aws_endpoint_url=moto_endpoint, home=tmp_path)
    codec = codec_from_settings(settings)
    new = await codec.encode([payload()])
    assert new[0].metadata[META_KEY_ID].startswith(b"kms-")
    assert await codec.decode([*old, *new]) == [payload(), payload()]
