"""One body-size limit for every route, enforced before a byte more than it is read.

A declared Content-Length over the limit is answered 413 at once; a body without
one (chunked) is counted as it arrives and cut off at the limit. Ten MiB holds a
CSV import of tens of thousands of recommendations; anything larger is a mistake
or an attack, and reading it in full before the 401 was both.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 10 * 1024 * 1024


class BodySizeLimit:
    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Answer now and let the app see a client that went away: whatever it does
                    # with that (FastAPI turns it into an error answer of its own) is dropped.
                    if not started and not refused:
                        await self._refuse(send)
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, tracked)

    async def _refuse(self, send: Send) -> None:
        body: dict[str, Any] = {"error": "too_large",
                                "detail": f"the request body is over the limit of {self.limit} bytes"}
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})
