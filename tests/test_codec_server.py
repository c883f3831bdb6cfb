"""`reclaim codec-server`: the Temporal codec-server protocol, bearer tokens, CORS for the UI only, audit."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from domain.policy import Role
from runtime.codec import EncryptionCodec, StaticKeyring, new_key_line, parse_keys
from runtime.settings import Settings
from starter.api.auth import TokenEntry, TokenStore
from starter.codec_server import Readers, configured_app, create_codec_app, dev_codec

UI = "http://127.0.0.1:8233"
READER, LIMITED, UI_TOKEN = "reader-token-0123456789", "limited-token-0123456789", "ui-token-0123456789abc"
PLAIN = {"metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
         "data": base64.b64encode(b'{"resource_id": "i-0123456789abcdef0"}').decode()}


def codec_app(keys: str = new_key_line("k1")) -> FastAPI:
    readers = Readers([TokenStore([
        TokenEntry(subject="carol", role=Role.VIEWER, customers=["*"], token=READER),
        TokenEntry(subject="dave", role=Role.ADMIN, customers=["acme"], token=LIMITED),
    ])], UI_TOKEN)
    return create_codec_app(EncryptionCodec(StaticKeyring(parse_keys(keys, "test"))), readers, ui_origins=[UI])


def http(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Namespace": "default"}


async def test_encode_then_decode_with_a_readers_token_and_every_decode_is_logged_by_subject(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with http(codec_app()) as client:
        sealed = await client.post("/encode", json={"payloads": [PLAIN]}, headers=bearer(READER))
        assert sealed.status_code == 200
        body = sealed.json()["payloads"][0]
        assert base64.b64decode(body["metadata"]["encoding"]) == b"binary/encrypted"
        assert base64.b64decode(body["metadata"]["encryption-key-id"]) == b"k1"
        assert b"i-0123456789abcdef0" not in base64.b64decode(body["data"])
        with caplog.at_level(logging.INFO, logger="reclaim.codec"):
            opened = await client.post("/decode", json=sealed.json(), headers=bearer(READER))
            ui = await client.post(f"/ui/{UI_TOKEN}/decode", json=sealed.json(), headers={"Origin": UI})
        assert opened.status_code == 200 and opened.json() == {"payloads": [PLAIN]}
        assert ui.status_code == 200 and ui.json() == {"payloads": [PLAIN]}
        assert ui.headers["access-control-allow-origin"] == UI
        audit = [r.getMessage() for r in caplog.records if r.name == "reclaim.codec"]
        assert any(m.startswith("decode by carol: 1 payloads, namespace default, keys k1") for m in audit), audit
        assert any(m.startswith("decode by web-ui: 1 payloads") for m in audit), audit
        # What is not sealed (sdk-core's marker bookkeeping) comes back as it came; nothing empty breaks.
        mixed = await client.post("/decode", json={"payloads": [PLAIN, *sealed.json()["payloads"]]},
                                  headers=bearer(READER))
        assert mixed.json() == {"payloads": [PLAIN, PLAIN]}
        assert (await client.post("/decode", json={"payloads": []}, headers=bearer(READER))).json() == {"payloads": []}


async def test_without_a_valid_token_nothing_is_opened_and_no_traceback_is_shown() -> None:
    async with http(codec_app()) as client:
        sealed = (await client.post("/encode", json={"payloads": [PLAIN]}, headers=bearer(READER))).json()
        for headers in ({}, {"Authorization": "Basic Y2Fyb2w6eA=="}, bearer("wrong-token-0123456789")):
            for path in ("/decode", "/encode"):
                refused = await client.post(path, json=sealed, headers=headers)
                assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
                assert refused.json()["error"] == "unauthorized" and "Traceback" not in refused.text
                assert "i-0123456789abcdef0" not in refused.text
        assert (await client.post("/ui/not-the-token/decode", json=sealed)).status_code == 401
        limited = await client.post("/decode", json=sealed, headers=bearer(LIMITED))
        assert limited.status_code == 403 and "every customer" in limited.json()["detail"]
        bad = await client.post("/decode", content=b"{not json", headers=bearer(READER))
        assert bad.status_code == 400 and bad.json()["error"] == "bad_request"

    # Sealed under a key this server does not have: said, never answered with the ciphertext as data.
    async with http(codec_app(new_key_line("k2"))) as other:
        refused = await other.post("/decode", json=sealed, headers=bearer(READER))
        assert refused.status_code == 422 and "key 'k1', which this process does not have" in refused.json()["detail"]


@pytest.mark.parametrize(("origin", "allowed"), [(UI, True), ("http://evil.example", False),
                                                 ("http://127.0.0.1:9999", False)])
async def test_cors_answers_the_web_uis_origin_only(origin: str, allowed: bool) -> None:
    async with http(codec_app()) as client:
        preflight = await client.options(f"/ui/{UI_TOKEN}/decode", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace"})
        assert (preflight.status_code == 200) is allowed
        assert (preflight.headers.get("access-control-allow-origin") == origin) is allowed
        answer = await client.post("/decode", json={"payloads": []}, headers={**bearer(READER), "Origin": origin})
        assert ("access-control-allow-origin" in answer.headers) is allowed


def test_the_configured_server_needs_keys_and_readers(tmp_path: Path) -> None:
    from runtime.codec import CodecError

    with pytest.raises(CodecError, match="nobody may use the codec server"):
        configured_app(Settings(codec_keys=new_key_line("k1"), home=tmp_path))
    with pytest.raises(CodecError, match="no key is given"):
        configured_app(Settings(codec_ui_token=UI_TOKEN, home=tmp_path))
    app = configured_app(Settings(codec_keys=new_key_line("k1"), codec_ui_token=UI_TOKEN, home=tmp_path,
                                  web_ui_url="https://temporal.example.com/ui"))
    cors: Any = next(m for m in app.user_middleware if m.cls.__name__ == "CORSMiddleware")
    assert cors.kwargs["allow_origins"] == ["https://temporal.example.com"]


def test_the_dev_stacks_codec_makes_its_keys_and_tokens(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, user="alice")
    codec = dev_codec(settings, 18234, 18233)
    assert settings.encrypt and (tmp_path / "codec-keys").exists()
    assert codec.ui_endpoint is not None and codec.ui_endpoint.startswith("http://127.0.0.1:18234/ui/")
    assert codec.operator == "alice" and codec.operator_token in codec.cli_flags()
    headless = dev_codec(Settings(home=tmp_path), 18235, None)
    assert headless.ui_endpoint is None


def test_reclaim_codec_key_prints_a_key_line_and_refuses_a_bad_id() -> None:
    from typer.testing import CliRunner

    from starter.cli import app

    made = CliRunner().invoke(app, ["codec-key", "--id", "2026-12"])
    assert made.exit_code == 0, made.output
    assert [k.key_id for k in parse_keys(made.stdout, "stdout")] == ["2026-12"]
    bad = CliRunner().invoke(app, ["codec-key", "--id", "no spaces"])
    assert bad.exit_code == 1 and "letters, digits" in bad.output and "Traceback" not in bad.output
