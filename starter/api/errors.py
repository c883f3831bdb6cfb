"""Every error leaves as JSON `{error, detail}`; nothing a client sends can produce a 500."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError

log = logging.getLogger("reclaim.api")


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


class FieldProblem(BaseModel):
    field: str = Field(description="Where the problem is, e.g. `body.recommendation.kind` or `query.cursor`.")
    message: str


class ErrorResponse(BaseModel):
    """The shape of every error answer."""

    error: str = Field(description="A stable machine-readable name: unauthenticated, forbidden, not_found, ...")
    detail: str | list[FieldProblem] = Field(
        description="A sentence, or (invalid_request) the list of offending fields."
    )


_DESCRIPTIONS = {
    401: "No bearer token, or an unknown one",
    403: "The token's role may not do this (or act for this customer)",
    404: "No such execution (another customer's answers the same)",
    409: "Refused in the execution's current state",
    422: "The request is invalid; `detail` lists the offending fields",
    503: "A dependency is unreachable",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting the JSON error answers a route can give."""
    return {status: {"model": ErrorResponse, "description": _DESCRIPTIONS.get(status, "Error")} for status in statuses}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {"field": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg", "invalid")}
            for err in exc.errors()
        ]
        return JSONResponse({"error": "invalid_request", "detail": fields}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _UNPARSEABLE_BODY:
            # FastAPI's answer to a body that is not even text (invalid UTF-8): as invalid as bad JSON.
            problem = {"field": "body", "message": "the body is not valid UTF-8 JSON"}
            return JSONResponse({"error": "invalid_request", "detail": [problem]}, status_code=422)
        # Keep the exception's headers: a 405 must say `Allow`, a 401 `WWW-Authenticate`.
        return JSONResponse({"error": _name(exc.status_code), "detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RPCError)
    async def _temporal_down(request: Request, exc: RPCError) -> JSONResponse:
        log.warning("Temporal did not answer %s %s: %s", request.method, request.url.path, exc.message)
        return JSONResponse({"error": "unavailable", "detail": "Temporal is unreachable; try again shortly"},
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(DBAPIError)
    async def _database_down(request: Request, exc: DBAPIError) -> JSONResponse:
        log.warning("the database did not answer %s %s: %s", request.method, request.url.path,
                    type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__)
        return JSONResponse({"error": "unavailable", "detail": "the database is unreachable; try again shortly"},
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(OSError)  # a connection refused or timed out below the drivers (TimeoutError too)
    async def _dependency_down(request: Request, exc: OSError) -> JSONResponse:
        log.warning("a dependency did not answer %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": "unavailable", "detail": "a dependency is unreachable; try again shortly"},
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(RuntimeError)
    async def _runtime(request: Request, exc: RuntimeError) -> JSONResponse:
        if str(exc).startswith(_TEMPORAL_CONNECT_FAILED):  # a lazy client that cannot reach Temporal yet
            log.warning("Temporal did not answer %s %s: %s", request.method, request.url.path,
                        str(exc).splitlines()[0][:200])
            return JSONResponse({"error": "unavailable", "detail": "Temporal is unreachable; try again shortly"},
                                status_code=503, headers={"Retry-After": "5"})
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal", "detail": "unexpected error; see the server log"}, status_code=500)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_errors(FastAPI.openapi(app))
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


#: How temporalio's bridge words a connection that could not be made.
_TEMPORAL_CONNECT_FAILED = "Failed client connect"
_UNPARSEABLE_BODY = "There was an error parsing the body"
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"


def document_errors(document: dict[str, Any]) -> None:
    """Make the OpenAPI document tell the truth about error answers, for every router.

    The handlers above answer every 4xx as `ErrorResponse`, never FastAPI's
    `HTTPValidationError`; and every operation behind a bearer token can answer 401 and 403.
    """
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    generated = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(generated.pop("$defs", {}))
    schemas["ErrorResponse"] = generated
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            answers: dict[str, Any] = operation["responses"]
            if operation.get("security"):
                for status in ("401", "403"):
                    answers.setdefault(status, {"description": _DESCRIPTIONS[int(status)]})
            for status, answer in answers.items():
                if not status.startswith("4"):
                    continue
                content = answer.setdefault("content", {}).setdefault("application/json", {})
                if "schema" not in content or content["schema"].get("$ref") == _FASTAPI_422:
                    content["schema"] = dict(_ERROR_REF)
                if answer.get("description") == "Validation Error":
                    answer["description"] = _DESCRIPTIONS[422]
    if _FASTAPI_422 not in json.dumps(document.get("paths", {})):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def _name(status: int) -> str:
    return {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
            405: "method_not_allowed", 409: "conflict", 415: "unsupported_media_type"}.get(status, "error")
