"""Fault injection at the HTTP layer of boto3, for the demo and fault tests.

A rule answers a matching request with an AWS error response instead of
sending it, in the wire format of the service's protocol. botocore then parses
and handles it exactly as it would AWS's own answer: a throttling code is
retried by botocore's retry handler with its backoff (as real throttling is),
an unhealable code surfaces as a `ClientError` at once. So the real retry and
compensation paths run, layer by layer. Off unless a worker is given rules.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

import boto3
from botocore.awsrequest import AWSPreparedRequest, AWSResponse


@dataclass
class FaultRule:
    operation: str
    """botocore operation name, e.g. "StartInstances"; "*" for any."""
    code: str
    message: str = "injected fault"
    resource: str | None = None
    """Only requests that mention this id (in the URL or the body)."""
    times: int | None = None
    """At most this many faults; None for unlimited."""
    probability: float = 1.0
    fired: int = field(default=0, init=False)


_ANSWERED = "https://reclaim-injected-fault.invalid/"


class _Body:
    """The `raw` an AWSResponse reads its content from."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._content


def error_response(url: str, protocol: str, code: str, message: str) -> AWSResponse:
    """What AWS sends back for an error, in the service's protocol (botocore's parsers read these)."""
    headers = {"x-amzn-RequestId": "reclaim-injected-fault"}
    if protocol in ("json", "rest-json"):
        headers["Content-Type"] = "application/x-amz-json-1.1"
        headers["x-amzn-ErrorType"] = code
        body = json.dumps({"__type": code, "message": message}).encode()
    elif protocol == "rest-xml":
        headers["Content-Type"] = "application/xml"
        body = (f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
                f"<RequestId>reclaim-injected-fault</RequestId></Error>").encode()
    else:  # ec2 and query
        headers["Content-Type"] = "text/xml"
        body = (f"<Response><Errors><Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
                f"</Error></Errors><RequestID>reclaim-injected-fault</RequestID></Response>").encode()
    return AWSResponse(url, 400, headers, _Body(body))


class FaultInjector:
    def __init__(self, rules: list[FaultRule], seed: int = 0) -> None:
        self.rules = rules
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.calls: dict[str, int] = {}
        """Requests per operation, retries included (what would have reached AWS without the faults)."""
        self._protocols: dict[str, str] = {}

    def install(self, session: boto3.Session) -> None:
        session.events.register("before-parameter-build", self._learn_protocol)
        # First: an in-process moto (mock_aws) answers at before-send too, and the first answer wins.
        session.events.register_first("before-send", self._before_send)

    def _learn_protocol(self, model: Any, **_: Any) -> None:
        """`before-send` names the service and operation but not the protocol: note it once per service."""
        service = model.service_model
        self._protocols.setdefault(service.service_id.hyphenize(), service.protocol)

    def _before_send(self, request: AWSPreparedRequest, event_name: str, **_: Any) -> AWSResponse | None:
        service, operation = event_name.split(".", 2)[1:]
        raw: Any = request.body
        body = raw if isinstance(raw, bytes) else str(raw or "").encode()
        with self._lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1
            for rule in self.rules:
                if rule.operation not in ("*", operation):
                    continue
                if rule.resource is not None and rule.resource not in request.url and \
                        rule.resource.encode() not in body:
                    continue
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                answer = error_response(request.url, self._protocols.get(service, "query"), rule.code, rule.message)
                # botocore offers the request to every before-send handler and keeps the first answer:
                # an in-process moto (mock_aws) would still execute it. Send it nowhere it could match.
                request.url = _ANSWERED
                return answer
        return None
