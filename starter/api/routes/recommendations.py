"""/api/v1/recommendations: import recommendations (JSON or CSV) and list them with their status."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field, ValidationError
from starlette.datastructures import UploadFile

from activities.actions.base import registry
from domain.base import StrictModel
from domain.recommendation import Recommendation
from domain.status import ExecutionStatus
from starter.api.deps import OperatorDep, ServicesDep, ViewerDep
from starter.api.errors import ApiError
from starter.executions import ReclaimError, check_recommendation
from store.repository import NEW, StoredRecommendation

router = APIRouter(prefix="/api/v1/recommendations", tags=["recommendations"])

#: Most recommendations one request may carry, and the largest body accepted.
MAX_ITEMS = 5000
MAX_BYTES = 10 * 1024 * 1024

CSV_REQUIRED = ("id", "customer_id", "account_id", "region", "kind", "resource_id", "estimated_monthly_savings")
CSV_OPTIONAL = ("params", "tags", "source", "created_at")
_CSV_JSON = ("params", "tags")


class ItemError(StrictModel):
    """What is wrong with one item: `index` (JSON, 0-based) or `row` (CSV line number, header = 1)."""

    index: int | None = None
    row: int | None = None
    field: str
    message: str


class ImportResult(StrictModel):
    imported: int = Field(description="Distinct recommendation ids written.")
    errors: list[ItemError]


class RecommendationList(StrictModel):
    recommendations: list[StoredRecommendation]


class _Item:
    """One incoming item: where it was (index or row), what it said, and problems found while reading it."""

    def __init__(self, where: dict[str, int], raw: Any, problems: list[tuple[str, str]] | None = None) -> None:
        self.where = where
        self.raw = raw
        self.problems = problems or []

    def error(self, field: str, message: str) -> ItemError:
        return ItemError(**self.where, field=field, message=message)


_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "array", "items": Recommendation.model_json_schema()}},
        "text/csv": {"schema": {"type": "string"}},
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"],
                       "properties": {"file": {"type": "string", "format": "binary"}}}
        },
    },
}


@router.post(
    "",
    response_model=ImportResult,
    response_model_exclude_none=True,
    openapi_extra={"requestBody": _BODY},
    responses={403: {"description": "A row names a customer this token may not act for: nothing imported."},
               413: {"description": "Too many items or too large a body."},
               415: {"description": "Neither JSON nor CSV."},
               422: {"description": "The body is not a JSON array / not CSV with the required columns."}},
)
async def import_recommendations(request: Request, principal: OperatorDep, svc: ServicesDep) -> ImportResult:
    """Import recommendations: a JSON array, or CSV (`text/csv` body, or a multipart upload in field `file`).

    CSV columns: `id, customer_id, account_id, region, kind, resource_id,
    estimated_monthly_savings` (required), `params, tags` (JSON objects; empty means `{}`),
    `source`, `created_at` (optional). Unknown columns are refused; rows of empty cells are skipped.

    **The rule.**
    1. A body that cannot be read (malformed JSON, not an array, CSV without the required
       columns or with unknown ones) is refused whole: **422**, nothing imported.
    2. If **any** item names a `customer_id` this token may not act for, the whole request is
       refused: **403**, nothing imported, even the valid items (a mixed batch is a mistake).
    3. Otherwise every valid item is imported and every invalid one is reported in `errors`
       (**200**), by `index` (JSON, 0-based) or `row` (CSV line number; the header is row 1),
       with the `field` at fault: schema errors, an unknown `kind`, `params` the kind refuses
       (the same checks as `POST /api/v1/executions/execute`), or an `id` already used by a
       recommendation of a customer the token cannot see.

    Importing an id again replaces that recommendation; within one request, the last item with
    an id wins. `imported` counts distinct ids written.
    """
    items = await _read_items(request)
    foreign = sorted({str(c) for c in (_customer_of(i) for i in items) if c is not None and not principal.sees(c)})
    if foreign:
        raise ApiError(403, "forbidden", f"this token may not act for customer(s) {', '.join(foreign)}; "
                                         "nothing was imported")
    errors: list[ItemError] = []
    valid: list[Recommendation] = []
    for item in items:
        problems = [item.error(f, m) for f, m in item.problems]
        rec = None
        if not problems:
            rec, problems = _validate(item)
        if rec is not None and not problems:
            stored = await svc.store.get_recommendation(rec.id)
            if stored is not None and not principal.sees(stored.customer_id):
                problems = [item.error("id", f"id {rec.id} is already used by another customer's recommendation")]
        if rec is not None and not problems:
            valid.append(rec)
        errors.extend(problems)
    imported = await svc.store.save_recommendations(valid)
    return ImportResult(imported=imported, errors=errors)


@router.get("", response_model=RecommendationList)
async def list_recommendations(
    principal: ViewerDep,
    svc: ServicesDep,
    customer_id: Annotated[str | None, Query(max_length=128)] = None,
    status: Annotated[str | None, Query(max_length=32, description="NEW, or the status of the latest execution.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> RecommendationList:
    """Recommendations with where they stand: NEW, or the status of their latest execution. Newest first.

    Only customers the token may see; another customer's id gives an empty list.
    """
    if status is not None:
        status = status.strip().upper()
        if status != NEW and status not in ExecutionStatus.__members__:
            raise ApiError(422, "invalid_request",
                           [{"field": "query.status", "message": "NEW or an execution status"}])
    if customer_id is not None and not principal.sees(customer_id):
        return RecommendationList(recommendations=[])
    allowed = principal.customer_filter()
    if customer_id is not None or allowed is None:
        found = await svc.store.list_recommendations(customer_id=customer_id, status=status, limit=limit)
        return RecommendationList(recommendations=found)
    merged: list[StoredRecommendation] = []
    for customer in sorted(allowed):
        merged += await svc.store.list_recommendations(customer_id=customer, status=status, limit=limit)
    merged.sort(key=lambda s: (s.recommendation.created_at or s.updated_at, s.recommendation.id), reverse=True)
    return RecommendationList(recommendations=merged[:limit])


# ---- reading the body -----------------------------------------------------------------------------


def _unreadable(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_request", [{"field": field, "message": message}])


async def _read_items(request: Request) -> list[_Item]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        raw = await _uploaded(request)
        return _csv_items(raw)
    body = await _body(request)
    if media in ("text/csv", "application/csv"):
        return _csv_items(body)
    if media == "application/json" or media.endswith("+json"):
        return _json_items(body)
    raise ApiError(415, "unsupported_media_type",
                   "send application/json, text/csv, or multipart/form-data with a CSV in field 'file'")


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BYTES:
        raise ApiError(413, "payload_too_large", f"the body may be at most {MAX_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BYTES:
            raise ApiError(413, "payload_too_large", f"the body may be at most {MAX_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _uploaded(request: Request) -> bytes:
    try:
        form = await request.form(max_files=1, max_fields=10, max_part_size=MAX_BYTES)
    except Exception as exc:  # malformed multipart: starlette's parser error
        raise _unreadable("body", f"not a readable multipart body ({exc})") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _unreadable("body.file", "a CSV file is required in multipart field 'file'")
        data = await upload.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise ApiError(413, "payload_too_large", f"the file may be at most {MAX_BYTES} bytes")
        return data
    finally:
        await form.close()


def _json_items(body: bytes) -> list[_Item]:
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _unreadable("body", f"not valid JSON ({exc})") from None
    if not isinstance(raw, list):
        raise _unreadable("body", "expected a JSON array of recommendations")
    _check_count(len(raw))
    return [_Item({"index": i}, item) for i, item in enumerate(raw)]


def _csv_items(body: bytes) -> list[_Item]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _unreadable("body", "the CSV is not UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="\x00extra")
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise _unreadable("body", f"not readable CSV ({exc})") from None
    if not header:
        raise _unreadable("body", "the CSV is empty; the first line must name the columns")
    columns = [c.strip() for c in header]
    reader.fieldnames = columns
    missing = [c for c in CSV_REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in CSV_REQUIRED + CSV_OPTIONAL]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if missing or unknown or duplicated:
        parts = [f"missing column(s) {', '.join(missing)}" if missing else "",
                 f"unknown column(s) {', '.join(unknown)}" if unknown else "",
                 f"repeated column(s) {', '.join(duplicated)}" if duplicated else ""]
        raise _unreadable("body", "; ".join(p for p in parts if p))
    items: list[_Item] = []
    try:
        for record in reader:
            if all(isinstance(v, str) and not v.strip() for v in record.values()):
                continue  # a row of empty cells, as spreadsheets export them
            _check_count(len(items) + 1)
            items.append(_csv_item(reader.line_num, record))
    except csv.Error as exc:
        raise _unreadable("body", f"not readable CSV at line {reader.line_num} ({exc})") from None
    return items


def _csv_item(line: int, record: dict[str, Any]) -> _Item:
    problems: list[tuple[str, str]] = []
    raw: dict[str, Any] = {}
    for column, value in record.items():
        if column == "\x00extra":
            problems.append(("<row>", "more fields than the header has columns"))
            continue
        if value is None or value.strip() == "":  # a short row, or an empty cell: not given
            continue
        if column in _CSV_JSON:
            try:
                raw[column] = json.loads(value)
            except (ValueError, RecursionError) as exc:
                problems.append((column, f"not valid JSON ({exc})"))
            continue
        raw[column] = value
    return _Item({"row": line}, raw, problems)


def _check_count(count: int) -> None:
    if count > MAX_ITEMS:
        raise ApiError(413, "payload_too_large", f"at most {MAX_ITEMS} recommendations per request")


# ---- checking items -------------------------------------------------------------------------------


def _customer_of(item: _Item) -> str | None:
    if isinstance(item.raw, dict):
        customer = item.raw.get("customer_id")
        if isinstance(customer, str) and customer.strip():
            return customer.strip()
    return None


def _validate(item: _Item) -> tuple[Recommendation | None, list[ItemError]]:
    try:
        rec = Recommendation.model_validate(item.raw)
    except ValidationError as exc:
        return None, [
            item.error(".".join(str(p) for p in err.get("loc", ())) or "<root>", err.get("msg", "invalid"))
            for err in exc.errors()
        ]
    try:
        check_recommendation(rec)
    except ReclaimError as exc:
        field = "kind" if rec.kind not in registry() else "params"
        return None, [item.error(field, str(exc))]
    return rec, []
