"""Every error the service can answer with, and the one place that maps it to HTTP.

Routes and the layers below them raise these; `install_error_handlers` turns each
into `{"error": {"code", "message"}}` with its status, so clients see one format
and never a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("lookalike.errors")


class LookalikeError(Exception):
    """Base of every error the API reports on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImage(LookalikeError):
    status = 400
    code = "invalid_image"


class BadRequest(LookalikeError):
    status = 400
    code = "bad_request"


class Unauthorized(LookalikeError):
    status = 401
    code = "unauthorized"


class Forbidden(LookalikeError):
    status = 403
    code = "forbidden"


class NotFound(LookalikeError):
    status = 404
    code = "not_found"


class PayloadTooLarge(LookalikeError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(LookalikeError):
    status = 415
    code = "unsupported_media_type"


class InvalidField(LookalikeError):
    status = 422
    code = "invalid_field"


class FeatureUnavailable(LookalikeError):
    """The configured backend does not offer this feature."""

    status = 501
    code = "not_implemented"


class NotReady(LookalikeError):
    status = 503
    code = "not_ready"


class EmbeddingUnavailable(LookalikeError):
    """The embedding worker crashed or hung while this request waited; it is restarting."""

    status = 503
    code = "embedding_unavailable"


class ModelMismatch(LookalikeError):
    """The catalogue was embedded by another model; serving it would mix two spaces."""

    status = 409
    code = "model_mismatch"


class CatalogBusy(LookalikeError):
    """Another process owns the local catalogue."""

    status = 409
    code = "catalog_busy"


class Duplicate(LookalikeError):
    """The upload nearly duplicates a catalogue item and on_duplicate=reject."""

    status = 409
    code = "duplicate"


class ReindexBusy(LookalikeError):
    """A reindex is already running."""

    status = 409
    code = "reindex_running"


class ReindexBlocked(LookalikeError):
    """Some items cannot be re-embedded: they have no kept image copy."""

    status = 409
    code = "reindex_blocked"


class ModelDirectoryError(LookalikeError):
    """The model directory is missing or does not follow the contract."""

    status = 503
    code = "model_unavailable"


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# Documented in OpenAPI for every route that can answer them.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}


def error_responses(*errors: type[LookalikeError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the errors a route raises, with an example each."""
    out: dict[int | str, dict[str, Any]] = {}
    for err in errors:
        entry = out.setdefault(
            err.status,
            {"description": "", "content": {"application/json": {"schema": ERROR_SCHEMA}}},
        )
        desc = (err.__doc__ or err.code).strip().splitlines()[0]
        entry["description"] = (entry["description"] + " / " if entry["description"] else "") + (
            f"`{err.code}`: {desc}"
        )
        entry["content"]["application/json"]["example"] = error_body(err.code, desc)
    return out


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_field",
    503: "not_ready",
}


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to the one JSON error format."""

    @app.exception_handler(LookalikeError)
    async def _lookalike(_: Request, exc: LookalikeError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else e.get("msg", ""))
        return JSONResponse(
            error_body("invalid_field", "; ".join(parts) or "invalid request"), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal_error", "internal server error; see the server log"),
            status_code=500,
        )
