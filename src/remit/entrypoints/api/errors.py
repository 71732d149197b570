"""One error envelope for the whole API, and the statuses each kind of error maps to (once, here)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import StatementError
from starlette.exceptions import HTTPException as StarletteHTTPException

from remit.domain.errors import ErrorKind, RemitError

STATUS = {ErrorKind.INVALID: 422, ErrorKind.NOT_FOUND: 404, ErrorKind.CONFLICT: 409, ErrorKind.FORBIDDEN: 403}
# Errors that say "try again later", not "this request is wrong": answered with Retry-After (seconds), and not
# stored under the request's Idempotency-Key (the gate releases it), so the same request may be sent again.
RETRY_LATER = {"test_clock_busy": "1"}


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None
    request_id: str | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorEnvelope, "description": description}


# Documented on every /v1 operation.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _doc("Malformed request: the body is not valid JSON."),
    401: _doc("Missing, invalid, expired or revoked API key."),
    403: _doc("The API key lacks the scope this operation needs."),
    404: _doc("No such object (or it belongs to another legal entity or mode)."),
    409: _doc("Conflict with the current state, or an idempotency key reused with a different request."),
    413: _doc("The request body is too large."),
    422: _doc("Invalid input: wrong type, unknown field, invalid value; `field` names it."),
    429: _doc("Too many requests for this API key; retry after the `Retry-After` seconds."),
}


def envelope(
    status: int,
    code: str,
    message: str,
    field: str | None,
    request_id: str | None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field, "request_id": request_id}}
    return JSONResponse(body, status_code=status, headers=headers)


def envelope_bytes(code: str, message: str, field: str | None, request_id: str | None) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "field": field, "request_id": request_id}}).encode()


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _field(loc: tuple[Any, ...]) -> str | None:
    tags = {"int", "str", "float", "bool", "date", "datetime", "dict", "list", "constrained-str", "none"}
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # Pydantic names the member of a union that failed ("quantity.int"); people want the field.
    parts = [p for p in parts if p not in tags and "[" not in p and not p.startswith("function-")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or None


INTERNAL_ERROR = "The request failed on Remit's side (the database may be unreachable); try it again shortly."


INVALID_TEXT = "The request holds text that cannot be stored: a NUL character or invalid Unicode."


def unstorable_text(exc: BaseException) -> bool:
    """Whether a database refused text no database can hold: a NUL character (PostgreSQL), a lone surrogate."""
    if isinstance(exc, UnicodeEncodeError):
        return exc.reason == "surrogates not allowed"
    orig = getattr(exc, "orig", None)
    return isinstance(exc, StatementError) and (
        (isinstance(orig, UnicodeEncodeError) and orig.reason == "surrogates not allowed")
        or "NUL (0x00)" in str(orig or exc)
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(RemitError)
    async def _remit(request: Request, exc: RemitError) -> JSONResponse:
        retry = RETRY_LATER.get(exc.code)
        headers = {"Retry-After": retry} if retry else None
        return envelope(STATUS[exc.kind], exc.code, exc.message, exc.field, _request_id(request), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "Invalid request.", "type": "invalid"}
        if first.get("type") == "json_invalid":
            return envelope(400, "invalid_json", "The request body is not valid JSON.", None, _request_id(request))
        kind = str(first.get("type", "invalid"))
        code = {"missing": "missing_field", "extra_forbidden": "unknown_field"}.get(kind, "invalid_value")
        message = str(first.get("msg", "Invalid value."))
        return envelope(422, code, message, _field(tuple(first.get("loc", ()))), _request_id(request))

    @app.exception_handler(StatementError)
    async def _database(request: Request, exc: StatementError) -> JSONResponse:
        """Text no database can hold (a NUL character on PostgreSQL, a lone surrogate anywhere), wherever it
        came in (path, query or body): the request's transaction was rolled back, nothing changed."""
        if unstorable_text(exc):
            return envelope(422, "invalid_text", INVALID_TEXT, None, _request_id(request))
        raise exc

    @app.exception_handler(UnicodeEncodeError)
    async def _unicode(request: Request, exc: UnicodeEncodeError) -> JSONResponse:
        if not unstorable_text(exc):
            raise exc
        return envelope(422, "invalid_text", INVALID_TEXT, None, _request_id(request))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        """Anything unexpected (Starlette's outermost middleware calls this, logs and re-raises it): a 500 in the
        same envelope as every other error, not a bare text page."""
        return envelope(500, "internal_error", INTERNAL_ERROR, None, _request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return envelope(
            exc.status_code, code, str(exc.detail), None, _request_id(request), headers=getattr(exc, "headers", None)
        )
