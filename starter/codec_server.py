"""`reclaim codec-server`: the Temporal remote codec, for the Web UI and `temporal --codec-endpoint`.

`POST /encode` and `POST /decode` take and answer `{"payloads": [...]}`, the Payloads message in
protobuf JSON (base64 metadata values and data), as the Web UI and the stock CLI send it. Each
call needs a bearer token of a reader (`RECLAIM_CODEC_SERVER_TOKENS_FILE` or `..._TOKENS`, the API
tokens' format, `reclaim token` makes entries) whose token covers every customer (`"*"`): a
payload's tenant is unknown until it is opened. Without one: 401; a token limited to some
customers: 403; never a traceback. Every decode is logged with the reader's subject.

A Web UI with OIDC sign-in forwards the person's JWT (`TEMPORAL_CODEC_PASS_ACCESS_TOKEN`): with
RECLAIM_CODEC_JWT_* set it is verified (starter/codec_jwt.py) and its `sub` is the subject logged.
Without sign-in the UI sends no token, so its endpoint carries one in the path:
`/ui/<RECLAIM_CODEC_UI_TOKEN>/decode`; whoever can open that UI can decode through it, logged as
`web-ui`. CORS answers the UI's origin only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from domain.policy import Role
from runtime import logmask
from runtime.codec import (
    ENCODING,
    META_ENCODING,
    META_KEY_ID,
    CodecError,
    EncryptionCodec,
    codec_from_settings,
    ensure_dev_keys,
)
from runtime.settings import Settings
from starter.api.auth import ALL_CUSTOMERS, TokenEntry, TokenStore
from starter.api.limits import BodySizeLimit
from starter.codec_jwt import JwtConfigError, JwtRefused, JwtVerifier, verifier_from_settings

log = logging.getLogger("reclaim.codec")
UI_SUBJECT = "web-ui"
Direction = Literal["encode", "decode"]


class Readers:
    """Who may use the codec: token stores (the configured one, a dev stack's own), the identity
    provider whose JWTs the Web UI forwards, and the UI's path token."""

    def __init__(self, stores: Sequence[TokenStore], ui_token: str | None = None,
                 jwt_verifier: JwtVerifier | None = None) -> None:
        self.stores = list(stores)
        self.ui_token = ui_token
        self.jwt = jwt_verifier
        logmask.register_secret(ui_token)

    def __bool__(self) -> bool:
        return bool(self.ui_token) or self.jwt is not None or any(len(s) for s in self.stores)

    def bearer(self, request: Request) -> str | JSONResponse:
        """The subject of the request's bearer token, or the answer refusing it."""
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return _refuse(401, "unauthorized", "a bearer token is needed (Authorization: Bearer <token>)")
        for store in self.stores:
            principal = store.authenticate(presented.strip())
            if principal is None:
                continue
            if ALL_CUSTOMERS not in principal.customers:
                return _refuse(403, "forbidden", f"{principal.subject}'s token is limited to some customers; "
                                                 "opening payloads needs one for every customer (\"*\")")
            return principal.subject
        if self.jwt is not None and presented.strip().count(".") == 2:  # a JWT's three parts
            try:
                return f"{self.jwt.subject(presented.strip())} (jwt)"
            except JwtRefused as exc:
                return _refuse(401, "unauthorized", f"JWT refused: {exc}")
        return _refuse(401, "unauthorized", "unknown bearer token")

    def ui(self, presented: str) -> str | JSONResponse:
        if self.ui_token and hmac.compare_digest(presented.encode(), self.ui_token.encode()):
            return UI_SUBJECT
        return _refuse(401, "unauthorized", "unknown Web UI token")


def _refuse(status: int, error: str, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def create_codec_app(codec: EncryptionCodec, readers: Readers, *, ui_origins: Sequence[str]) -> FastAPI:
    app = FastAPI(title="Reclaim codec server", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(  # outermost: refusals carry CORS headers too, so the UI can read them
        CORSMiddleware, allow_origins=list(ui_origins), allow_methods=["POST"],
        allow_headers=["Content-Type", "X-Namespace", "Authorization"], max_age=600,
    )

    async def convert(request: Request, direction: Direction, subject: str | JSONResponse) -> Response:
        if isinstance(subject, JSONResponse):  # why, for whoever sets up the UI's sign-in (never the token)
            detail = json.loads(bytes(subject.body)).get("detail", "")
            log.warning("%s refused (%s) from %s: %s", direction, subject.status_code, _client(request), detail)
            return subject
        try:
            payloads = json_format.Parse(await request.body(), Payloads())
        except (json_format.ParseError, UnicodeDecodeError, ValueError):
            return _refuse(400, "bad_request", 'expected {"payloads": [...]} in protobuf JSON')
        namespace = request.headers.get("x-namespace", "-")
        try:
            if direction == "decode":
                keys = sorted({p.metadata[META_KEY_ID].decode("utf-8", "replace")
                               for p in payloads.payloads if META_KEY_ID in p.metadata})
                log.info("decode by %s: %d payloads, namespace %s, keys %s, from %s", subject,
                         len(payloads.payloads), namespace, ",".join(keys) or "-", _client(request))
                result = await open_sealed(codec, list(payloads.payloads))
            else:
                result = await codec.encode(payloads.payloads)
        except CodecError as exc:
            log.warning("%s by %s failed: %s", direction, subject, exc)
            return _refuse(422, "undecryptable" if direction == "decode" else "unencryptable", str(exc))
        except Exception as exc:  # one line, never a traceback to the caller
            log.error("%s by %s failed: %s", direction, subject, type(exc).__name__)
            return _refuse(500, "internal", f"{direction} failed ({type(exc).__name__})")
        body = json_format.MessageToDict(Payloads(payloads=result))
        return Response(json.dumps({"payloads": body.get("payloads", [])}), media_type="application/json")

    @app.post("/encode")
    async def encode(request: Request) -> Response:
        return await convert(request, "encode", readers.bearer(request))

    @app.post("/decode")
    async def decode(request: Request) -> Response:
        return await convert(request, "decode", readers.bearer(request))

    @app.post("/ui/{token}/encode")
    async def ui_encode(token: str, request: Request) -> Response:
        return await convert(request, "encode", readers.ui(token))

    @app.post("/ui/{token}/decode")
    async def ui_decode(token: str, request: Request) -> Response:
        return await convert(request, "decode", readers.ui(token))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def open_sealed(codec: EncryptionCodec, payloads: list[Payload]) -> list[Payload]:
    """Open the sealed payloads; hand back the others as they came. A history holds some plaintext
    by design (sdk-core's marker bookkeeping: patch ids, local activity types), and the caller
    already has it: answering it back reveals nothing, refusing it would blank the whole page."""
    sealed = [index for index, p in enumerate(payloads) if p.metadata.get(META_ENCODING) == ENCODING]
    opened = await codec.decode([payloads[index] for index in sealed])
    for index, payload in zip(sealed, opened, strict=True):
        payloads[index] = payload
    return payloads


def _client(request: Request) -> str:
    origin = request.headers.get("origin")
    host = request.client.host if request.client else "?"
    return f"{host}" + (f" (origin {origin})" if origin else "")


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def configured_app(settings: Settings) -> FastAPI:
    """`reclaim codec-server`: keys, readers and the UI's origin from the settings."""
    try:
        verifier = verifier_from_settings(
            jwks_file=settings.codec_jwt_jwks_file, public_key_file=settings.codec_jwt_public_key_file,
            issuer=settings.codec_jwt_issuer, audience=settings.codec_jwt_audience,
            leeway_seconds=settings.codec_jwt_leeway_seconds)
    except JwtConfigError as exc:
        raise CodecError(str(exc)) from None
    readers = Readers([TokenStore.load(settings.codec_server_tokens_file, settings.codec_server_tokens)],
                      settings.codec_ui_token, verifier)
    if not readers:
        raise CodecError("nobody may use the codec server: set RECLAIM_CODEC_SERVER_TOKENS_FILE (or "
                         "RECLAIM_CODEC_SERVER_TOKENS, RECLAIM_CODEC_JWT_* for the Web UI's forwarded JWT, "
                         "or RECLAIM_CODEC_UI_TOKEN for the Web UI)")
    origin = settings.codec_ui_origin or origin_of(settings.web_ui_url)
    return create_codec_app(codec_from_settings(settings), readers, ui_origins=[origin])


# ---- beside the dev stack (`reclaim dev --encrypt`, `reclaim demo --encrypt`) --------------------------


@dataclass
class DevCodec:
    """The dev stack's codec server: its address, the Web UI's endpoint, a token for the operator."""

    url: str
    port: int
    ui_endpoint: str | None
    operator: str
    operator_token: str
    app: FastAPI

    def cli_flags(self) -> str:
        return f"--codec-endpoint {self.url} --codec-auth 'Bearer {self.operator_token}'"


def dev_codec(settings: Settings, port: int, ui_port: int | None) -> DevCodec:
    """Encryption on for this stack: keys (a key file in the home when none is configured), a fresh
    operator token and Web UI token for this run, CORS for the UI's two local origins."""
    settings.encrypt = True
    ensure_dev_keys(settings)
    operator_token, ui_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    own = TokenStore([TokenEntry(subject=settings.user, role=Role.ADMIN, customers=[ALL_CUSTOMERS],
                                 token=operator_token)])
    configured = TokenStore.load(settings.codec_server_tokens_file, settings.codec_server_tokens)
    readers = Readers([configured, own], ui_token if ui_port is not None else None)
    origins = [f"http://127.0.0.1:{ui_port}", f"http://localhost:{ui_port}"] if ui_port is not None else []
    url = f"http://127.0.0.1:{port}"
    app = create_codec_app(codec_from_settings(settings), readers, ui_origins=origins)
    return DevCodec(url=url, port=port, ui_endpoint=f"{url}/ui/{ui_token}" if ui_port is not None else None,
                    operator=settings.user, operator_token=operator_token, app=app)


@contextlib.asynccontextmanager
async def codec_running(codec: DevCodec) -> AsyncIterator[DevCodec]:
    """Serve the dev codec in this event loop until the block ends; its decodes are logged."""
    from starter.api.server import serve_asgi

    if not logging.getLogger().handlers:
        logmask.configure(None, default=logging.WARNING)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    stop = asyncio.Event()
    task = asyncio.create_task(serve_asgi(codec.app, "127.0.0.1", codec.port, stop))
    try:
        yield codec
    finally:
        stop.set()
        await task
