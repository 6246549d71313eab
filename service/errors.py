"""One JSON shape for every error the service returns.

    {"error": {"code": "<snake_case>", "message": "<a sentence for a person>", "detail": <JSON or null>}}

``code`` is stable and meant for programs; ``message`` may change wording. Caller
mistakes get a 4xx with their own code; a 500 (``internal_error``) means a bug.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from training.encoder import NoTextTower

log = logging.getLogger(__name__)

# pydantic error types that the request schemas raise on purpose and that are their own error code
DOMAIN_ERROR_TYPES = frozenset({"empty_query"})

# codes for the statuses that Starlette/FastAPI raise by themselves (routing, body parsing)
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the service means to return: an HTTP status, a stable code and a message."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": detail}}


def error_response(status: int, code: str, message: str, detail: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, detail), status_code=status, headers=headers)


def field_error(loc: tuple[str | int, ...], msg: str, type_: str) -> dict[str, Any]:
    """One entry of a 422's ``detail`` list, the same shape pydantic's errors are reported in."""
    return {"loc": list(loc), "msg": msg, "type": type_}


def validation_error(loc: tuple[str | int, ...], msg: str, type_: str = "value_error",
                     code: str = "validation_error") -> ApiError:
    """A 422 for a request that parsed but breaks a limit the settings set."""
    return ApiError(422, code, f"{'.'.join(map(str, loc))}: {msg}", [field_error(loc, msg, type_)])


MAX_MESSAGE_CHARS = 300  # of one problem's message, and of each part of its location
MAX_LOC_PARTS = 16


def _short(text: Any) -> str:
    text = str(text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"


def _jsonable_errors(errors: Any, limit: int) -> list[dict[str, Any]]:
    # Only loc/msg/type, each cut short: pydantic's "input" may echo a huge body, its "ctx" may hold
    # exception objects, and a location may name a key the caller made as long as the body.
    return [field_error(tuple(p if isinstance(p, int) else _short(p) for p in tuple(e.get("loc", ()))[:MAX_LOC_PARTS]),
                        _short(e.get("msg", "")), _short(e.get("type", "")))
            for e in errors[:limit]]


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.detail, exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 422 listing the first ``max_error_details`` problems (the message says how many there were)."""
    every = exc.errors()
    limit = getattr(getattr(request.app.state, "settings", None), "max_error_details", 20)
    errors = _jsonable_errors(every, limit)
    domain = [e for e in errors if e["type"] in DOMAIN_ERROR_TYPES]
    code = domain[0]["type"] if domain else "validation_error"
    first = (domain or errors or [field_error((), "the request is not valid", "value_error")])[0]
    where = ".".join(str(p) for p in first["loc"])
    message = f"{where}: {first['msg']}" if where else first["msg"]
    if len(every) > 1:
        message += f" (and {len(every) - 1} more problem{'s' if len(every) > 2 else ''}"
        message += f"; the first {len(errors)} are listed)" if len(every) > len(errors) else ")"
    return error_response(422, code, message, errors)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    code = HTTP_CODES.get(status, f"http_{status}")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:  # a status outside the standard set
        phrase = ""
    if status == 404 and exc.detail in (None, phrase):
        message = f"nothing at {request.method} {request.url.path}"
    elif status == 405 and exc.detail in (None, phrase):
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail) if exc.detail else phrase
    headers = getattr(exc, "headers", None)
    if status == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request, (headers or {}).get("Allow", ""))}
    return error_response(status, code, message, None, headers)


def _allowed_methods(request: Request, given: str) -> str:
    """Every method some route takes at this path: the router names only the first route that matched."""
    methods = {m.strip().upper() for m in given.split(",") if m.strip()}
    for template, operations in request.app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(request.url.path):
            methods |= {method.upper() for method in operations}
    return ", ".join(sorted(methods))


async def _no_text_tower(request: Request, exc: NoTextTower) -> JSONResponse:
    return error_response(400, "no_text_tower", str(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "the server failed to handle this request; the error has been logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(NoTextTower, _no_text_tower)
    app.add_exception_handler(Exception, _unexpected)
