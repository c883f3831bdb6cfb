"""The codec server and the Web UI's forwarded JWT: a token the IdP signed for this issuer and audience
opens payloads and its `sub` is logged; anything else is a 401 and nothing is opened."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

from runtime.codec import CodecError, new_key_line
from runtime.settings import Settings
from starter.codec_jwt import JwtConfigError, keys_from_jwks
from starter.codec_server import configured_app

ISSUER, AUDIENCE = "https://idp.example.com/", "temporal-ui"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PLAIN = {"metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
         "data": base64.b64encode(b'{"resource_id": "i-0123456789abcdef0"}').decode()}
SECRET_TEXT = "i-0123456789abcdef0"


def jwk(private: Any, kid: str) -> dict[str, Any]:
    public = private.public_key()
    as_json = (jwt.algorithms.RSAAlgorithm.to_jwk(public) if isinstance(public, rsa.RSAPublicKey)
               else jwt.algorithms.ECAlgorithm.to_jwk(public))
    return {**json.loads(as_json), "kid": kid, "use": "sig"}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice@example.com", "iat": now, "exp": now + 300,
            **overrides}


def signed(private: Any = RSA_KEY, kid: str | None = "rsa-1", alg: str = "RS256", **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**overrides), private, algorithm=alg, headers=headers)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned() -> str:
    """alg=none: a token anyone can write."""
    header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
    return f"{header}.{b64url(json.dumps(claims()).encode())}."


def hmac_with_public_key() -> str:
    """The classic confusion: HS256 'signed' with the RSA public key's PEM as the shared secret."""
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64url(json.dumps(claims()).encode())
    mac = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(mac)}"


def tampered() -> str:
    """A genuine token whose claims were edited afterwards (another sub), the signature kept."""
    header, _, signature = signed().split(".")
    return f"{header}.{b64url(json.dumps(claims(sub='mallory')).encode())}.{signature}"


def jwks_app(tmp_path: Path) -> FastAPI:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1"),
                                         {**jwk(OTHER_RSA_KEY, "enc-1"), "use": "enc"}]}))
    return configured_app(Settings(home=tmp_path, codec_keys=new_key_line("k1"), codec_jwt_jwks_file=jwks,
                                   codec_jwt_issuer=ISSUER, codec_jwt_audience=AUDIENCE,
                                   web_ui_url="https://temporal.example.com"))


def http(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Namespace": "default"}


async def test_a_jwt_the_idp_signed_opens_payloads_and_every_decode_is_logged_by_its_sub(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    async with http(jwks_app(tmp_path)) as client:
        sealed = await client.post("/encode", json={"payloads": [PLAIN]}, headers=bearer(signed()))
        assert sealed.status_code == 200, sealed.text
        assert SECRET_TEXT.encode() not in base64.b64decode(sealed.json()["payloads"][0]["data"])
        with caplog.at_level(logging.INFO, logger="reclaim.codec"):
            opened = await client.post("/decode", json=sealed.json(), headers=bearer(signed()))
            by_ec = await client.post("/decode", json=sealed.json(), headers={
                **bearer(signed(EC_KEY, "ec-1", "ES256", sub="bob")), "Origin": "https://temporal.example.com"})
        assert opened.status_code == 200 and opened.json() == {"payloads": [PLAIN]}
        assert by_ec.status_code == 200 and by_ec.json() == {"payloads": [PLAIN]}
        assert by_ec.headers["access-control-allow-origin"] == "https://temporal.example.com"
        audit = [r.getMessage() for r in caplog.records if r.name == "reclaim.codec"]
        assert any(m.startswith("decode by alice@example.com (jwt): 1 payloads, namespace default, keys k1")
                   for m in audit), audit
        assert any(m.startswith("decode by bob (jwt): 1 payloads") for m in audit), audit


REFUSED = {
    "expired": (lambda: signed(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200), "expired"),
    "wrong issuer": (lambda: signed(iss="https://evil.example.com/"), "issuer"),
    "wrong audience": (lambda: signed(aud="another-app"), "audience"),
    "wrong key": (lambda: signed(OTHER_RSA_KEY), "signature"),
    "unknown kid": (lambda: signed(OTHER_RSA_KEY, kid="rsa-9"), "no known key"),
    "an encryption key's kid": (lambda: signed(OTHER_RSA_KEY, kid="enc-1"), "no known key"),
    "tampered": (tampered, "signature"),
    "alg none": (unsigned, "'none' is not accepted"),
    "hmac with the public key": (hmac_with_public_key, "'HS256' is not accepted"),
    "EC alg on the RSA key": (lambda: signed(EC_KEY, kid="rsa-1", alg="ES256"), "does not match"),
    "no sub": (lambda: signed(sub=None), "sub"),
    "no exp": (lambda: jwt.encode({k: v for k, v in claims().items() if k != "exp"}, RSA_KEY,
                                  algorithm="RS256", headers={"kid": "rsa-1"}), "exp"),
    "not yet valid": (lambda: signed(nbf=int(time.time()) + 3600), "not valid"),
    "sub with a newline": (lambda: signed(sub="alice\ndecode by admin"), "printable"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_a_jwt_that_does_not_verify_is_refused_with_401_and_nothing_is_opened(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    make, reason = REFUSED[case]
    async with http(jwks_app(tmp_path)) as client:
        sealed = (await client.post("/encode", json={"payloads": [PLAIN]}, headers=bearer(signed()))).json()
        with caplog.at_level(logging.INFO, logger="reclaim.codec"):
            token = make()
            refused = await client.post("/decode", json=sealed, headers=bearer(token))
            encode = await client.post("/encode", json={"payloads": [PLAIN]}, headers=bearer(make()))
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["error"] == "unauthorized" and reason in refused.json()["detail"], refused.json()
    assert SECRET_TEXT not in refused.text and "Traceback" not in refused.text
    assert encode.status_code == 401
    audit = [r.getMessage() for r in caplog.records if r.name == "reclaim.codec"]
    assert not any(m.startswith("decode by") for m in audit), audit
    assert any(m.startswith("decode refused (401)") and reason in m for m in audit), audit
    assert not any(token in m or token.split(".")[-1] in m for m in audit if token.split(".")[-1])


async def test_a_pem_public_key_setting_verifies_its_own_algorithm_only(tmp_path: Path) -> None:
    pem = tmp_path / "idp.pem"
    pem.write_bytes(EC_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    app = configured_app(Settings(home=tmp_path, codec_keys=new_key_line("k1"), codec_jwt_public_key_file=pem,
                                  codec_jwt_issuer=ISSUER, codec_jwt_audience=AUDIENCE))
    async with http(app) as client:
        sealed = await client.post("/encode", json={"payloads": [PLAIN]},
                                   headers=bearer(signed(EC_KEY, kid=None, alg="ES256")))
        assert sealed.status_code == 200, sealed.text
        opened = await client.post("/decode", json=sealed.json(), headers=bearer(signed(EC_KEY, alg="ES256")))
        assert opened.json() == {"payloads": [PLAIN]}
        other_ec = ec.generate_private_key(ec.SECP256R1())
        for token in (signed(RSA_KEY, kid=None), signed(other_ec, kid=None, alg="ES256"), unsigned()):
            assert (await client.post("/decode", json=sealed.json(), headers=bearer(token))).status_code == 401
        # A static token is still "unknown", not mistaken for a JWT.
        assert (await client.post("/decode", json=sealed.json(), headers=bearer("x" * 24))).json()["detail"] \
            == "unknown bearer token"


def test_half_a_jwt_configuration_stops_the_server_at_start(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk(RSA_KEY, "rsa-1")]}))
    base: dict[str, Any] = {"home": tmp_path, "codec_keys": new_key_line("k1")}
    with pytest.raises(CodecError, match="issuer and an audience"):
        configured_app(Settings(**base, codec_jwt_jwks_file=jwks, codec_jwt_issuer=ISSUER))
    with pytest.raises(CodecError, match="but no key"):
        configured_app(Settings(**base, codec_jwt_issuer=ISSUER, codec_jwt_audience=AUDIENCE))
    with pytest.raises(CodecError, match="set one of"):
        configured_app(Settings(**base, codec_jwt_jwks_file=jwks, codec_jwt_public_key_file=jwks,
                                codec_jwt_issuer=ISSUER, codec_jwt_audience=AUDIENCE))
    with pytest.raises(CodecError, match="cannot read"):
        configured_app(Settings(**base, codec_jwt_jwks_file=tmp_path / "missing.json",
                                codec_jwt_issuer=ISSUER, codec_jwt_audience=AUDIENCE))
    with pytest.raises(JwtConfigError, match="shared secret"):
        keys_from_jwks(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hs"}]}), "jwks.json")
    with pytest.raises(JwtConfigError, match="key 'rsa-1'"):  # an RSA key that claims an EC algorithm
        keys_from_jwks(json.dumps({"keys": [{**jwk(RSA_KEY, "rsa-1"), "alg": "ES256"}]}), "jwks.json")
