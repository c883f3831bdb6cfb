"""The Web UI's forwarded JWT, verified for the codec server.

With OIDC sign-in and `TEMPORAL_CODEC_PASS_ACCESS_TOKEN=true` the Temporal Web UI sends the person's
access token to the codec endpoint as `Authorization: Bearer <JWT>`. Whoever the identity provider
signed a token for, for this issuer and audience and not yet expired, may decode; the token's `sub` is
who the audit log names. Keys come from a JWKS file (the IdP's `jwks_uri` saved; picked by `kid`) or
one PEM public key, read at start-up: a rotated IdP key needs the file refreshed and a restart.

Only asymmetric algorithms are accepted, each bound to its key's type: `alg=none`, an HMAC token
"signed" with the public key, or a key of the wrong family never verify. A token is refused whole
with one reason (expired, wrong issuer, ...) and nothing is decoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

# Asymmetric algorithms only: a verifier holding public keys must never accept a shared-secret one.
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
ASYMMETRIC = frozenset({*RSA_ALGORITHMS, *EC_ALGORITHMS.values(), "EdDSA"})
MAX_SUBJECT = 200


class JwtRefused(Exception):
    """The token does not let its bearer decode; the message says why, without the token."""


class JwtConfigError(ValueError):
    """The JWT settings cannot verify anything (a missing issuer, an unreadable key file, ...)."""


@dataclass(frozen=True)
class PublicKey:
    key: Any  # a cryptography public key
    algorithms: tuple[str, ...]
    kid: str | None = None


@dataclass(frozen=True)
class JwtVerifier:
    """Checks a forwarded JWT: signature by a known key, `iss`, `aud`, `exp` (and `nbf`), a `sub`."""

    keys: tuple[PublicKey, ...]
    issuer: str
    audience: str
    leeway_seconds: float = 30.0

    def subject(self, token: str) -> str:
        """The token's `sub` once every check passed; JwtRefused otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise JwtRefused(f"not a JWT ({exc})") from None
        alg = header.get("alg")
        if alg not in ASYMMETRIC:
            raise JwtRefused(f"algorithm {alg!r} is not accepted (asymmetric signatures only)")
        key = self._key_for(header.get("kid"))
        if alg not in key.algorithms:
            raise JwtRefused(f"algorithm {alg} does not match the key {key.kid or '(PEM)'}")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[alg], issuer=self.issuer, audience=self.audience,
                leeway=self.leeway_seconds, options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise JwtRefused("the token has expired") from None
        except jwt.InvalidIssuerError:
            raise JwtRefused("the token's issuer is not the configured one") from None
        except jwt.InvalidAudienceError:
            raise JwtRefused("the token's audience is not the configured one") from None
        except jwt.InvalidSignatureError:
            raise JwtRefused("the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise JwtRefused(f"the token is not valid ({exc})") from None
        return _printable_subject(claims.get("sub"))

    def _key_for(self, kid: object) -> PublicKey:
        """By `kid` in a JWKS; a single key without one (the PEM setting) verifies whatever kid is named."""
        if len(self.keys) == 1 and self.keys[0].kid is None:
            return self.keys[0]
        if kid is not None:
            for key in self.keys:
                if key.kid == kid:
                    return key
            raise JwtRefused(f"no known key has kid {str(kid)[:64]!r}")
        if len(self.keys) == 1:
            return self.keys[0]
        raise JwtRefused("the token names no kid and several keys are known")


def _printable_subject(sub: object) -> str:
    """A `sub` fit for one log line: a log reader must not be fooled by newlines or escapes in it."""
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT or not sub.isprintable():
        raise JwtRefused(f"the token's sub must be printable text of 1 to {MAX_SUBJECT} characters")
    return sub


def algorithms_for(key: Any) -> tuple[str, ...]:
    """The algorithms a public key can verify: an RSA key never checks an EC or HMAC signature."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in EC_ALGORITHMS:
        return (EC_ALGORITHMS[key.curve.name],)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ("EdDSA",)
    raise JwtConfigError(f"unsupported public key type {type(key).__name__} (RSA, EC P-256/384/521, Ed25519/448)")


def keys_from_pem(text: bytes, source: str) -> tuple[PublicKey, ...]:
    try:
        key = serialization.load_pem_public_key(text)
    except ValueError as exc:
        raise JwtConfigError(f"{source}: not a PEM public key ({exc})") from None
    return (PublicKey(key=key, algorithms=algorithms_for(key)),)


def keys_from_jwks(text: str, source: str) -> tuple[PublicKey, ...]:
    """The JWKS's signing keys; a key marked for encryption only, or a shared secret, is refused."""
    try:
        document = json.loads(text)
        entries = document["keys"]
    except (ValueError, KeyError, TypeError):
        raise JwtConfigError(f'{source}: expected a JWKS, {{"keys": [...]}}') from None
    keys: list[PublicKey] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise JwtConfigError(f"{source}: every key must be an object")
        if entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") == "oct":
            raise JwtConfigError(f"{source}: key {entry.get('kid')!r} is a shared secret; only public keys verify")
        try:
            public = jwt.PyJWK(entry).key
        except jwt.PyJWTError as exc:
            raise JwtConfigError(f"{source}: key {entry.get('kid')!r}: {exc}") from None
        algorithms = algorithms_for(public)
        if entry.get("alg") is not None:
            if entry["alg"] not in algorithms:
                raise JwtConfigError(f"{source}: key {entry.get('kid')!r} says alg {entry['alg']}, "
                                     f"which its key type cannot verify")
            algorithms = (entry["alg"],)
        keys.append(PublicKey(key=public, algorithms=algorithms, kid=entry.get("kid")))
    if not keys:
        raise JwtConfigError(f"{source}: no signing key")
    return tuple(keys)


def verifier_from_settings(
    *, jwks_file: Path | None, public_key_file: Path | None, issuer: str | None, audience: str | None,
    leeway_seconds: float = 30.0,
) -> JwtVerifier | None:
    """None when no key is configured (JWTs then refused as unknown tokens); refuses half a configuration."""
    if jwks_file is None and public_key_file is None:
        if issuer or audience:
            raise JwtConfigError("RECLAIM_CODEC_JWT_ISSUER/AUDIENCE are set but no key: set "
                                 "RECLAIM_CODEC_JWT_JWKS_FILE or RECLAIM_CODEC_JWT_PUBLIC_KEY_FILE")
        return None
    if jwks_file is not None and public_key_file is not None:
        raise JwtConfigError("set one of RECLAIM_CODEC_JWT_JWKS_FILE and RECLAIM_CODEC_JWT_PUBLIC_KEY_FILE")
    if not issuer or not audience:
        raise JwtConfigError("a forwarded JWT is checked against an issuer and an audience: set "
                             "RECLAIM_CODEC_JWT_ISSUER and RECLAIM_CODEC_JWT_AUDIENCE")
    try:
        if jwks_file is not None:
            keys = keys_from_jwks(Path(jwks_file).read_text(), str(jwks_file))
        else:
            assert public_key_file is not None
            keys = keys_from_pem(Path(public_key_file).read_bytes(), str(public_key_file))
    except OSError as exc:
        raise JwtConfigError(f"cannot read the JWT key file: {exc}") from None
    return JwtVerifier(keys=keys, issuer=issuer, audience=audience, leeway_seconds=leeway_seconds)
