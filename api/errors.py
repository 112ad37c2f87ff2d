"""Named API errors, and the handlers that turn every failure into {"error": {"code", "message"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from readmodel.connect import StoreError

log = logging.getLogger("api")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error the API returns has this shape; `code` is stable, `message` is for people."""

    error: ErrorDetail


class ApiError(Exception):
    """Base of the errors the API answers with; each subclass has one status and one code."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


class InvalidRequest(ApiError):
    """A parameter is missing or malformed."""

    status, code = 400, "invalid_request"


class InvalidUserId(ApiError):
    """The masterAccountId has characters other than letters, digits and :_.- or is too long."""

    status, code = 400, "invalid_user_id"


class MissingCredentials(ApiError):
    """No service key or user token was sent."""

    status, code = 401, "missing_credentials"


class InvalidCredentials(ApiError):
    """The key or token is unknown, malformed or badly signed."""

    status, code = 401, "invalid_credentials"


class TokenExpired(ApiError):
    """The user token was valid but its `exp` has passed: mint a new one."""

    status, code = 401, "token_expired"


class TokenNotYetValid(ApiError):
    """The user token was issued in the future by this server's clock (beyond the leeway): clock skew."""

    status, code = 401, "token_not_yet_valid"


class Forbidden(ApiError):
    """A user token may only read its own user's status."""

    status, code = 403, "forbidden"


class TooManyStreams(ApiError):
    """This user or credential already holds as many open streams as it may."""

    status, code = 429, "too_many_streams"


class ServerBusy(ApiError):
    """This process already holds as many open streams as it may; another instance may have room."""

    status, code = 503, "server_busy"


class ProjectionBehind(ApiError):
    """A fresh-after-write read (afterClusterTime): the projector had not applied the source through
    that cluster time within the wait (FRESH_WAIT_S). Retry, or read without afterClusterTime."""

    status, code = 504, "projection_behind"


class StoreUnavailable(ApiError):
    """Redis did not answer."""

    status, code = 503, "store_unavailable"


class NotReady(ApiError):
    """Redis or the projector is not healthy enough to serve fresh data."""

    status, code = 503, "not_ready"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, {"Retry-After": "1", **(headers or {})})


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 406: "not_acceptable", 413: "too_large"}


def install_handlers(app: FastAPI) -> None:
    """Map every failure to the JSON error shape; nothing escapes as an HTML or plain-text 500."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        code = InvalidRequest.code
        for err in exc.errors():
            where = ".".join(str(part) for part in err.get("loc", ()))
            if tuple(err.get("loc", ()))[:2] == ("path", "masterAccountId"):
                code = InvalidUserId.code
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(400, code, "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    async def _redis(request: Request, exc: Exception) -> JSONResponse:
        log.warning("redis error on %s: %s", request.url.path, exc)
        return error_response(StoreUnavailable.status, StoreUnavailable.code, "the status store is unavailable; retry shortly",
                              {"Retry-After": "1"})

    for store_error in StoreError:  # a cluster client's errors are not all RedisErrors
        app.add_exception_handler(store_error, _redis)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s", request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "unexpected error; it has been logged")
