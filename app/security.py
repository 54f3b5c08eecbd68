"""API keys: writes need one whenever keys are configured; reads only if asked to.

Keys come as `X-API-Key: KEY` or `Authorization: Bearer KEY` and are compared
in constant time against every configured key, so timing does not reveal how
much of a guess was right, nor which key matched.

Write routes declare FastAPI's security schemes as dependencies, which is how
OpenAPI learns about them. Read routes, `/search` among them, check keys in
one plain dependency instead: FastAPI solves each dependency on every request,
and the two scheme objects cost `/search` about a tenth of its event-loop time
(benchmarks/RESULTS.md); they name the same schemes with `READ_SECURITY_DOC`.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.config import Settings
from app.errors import Forbidden, Unauthorized

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="One of LOOKALIKE_API_KEY's keys."
)
bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`, same keys.")


def key_matches(candidate: str, keys: list[str]) -> bool:
    given = candidate.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    return matched


def _check(settings: Settings, header_key: str | None, bearer_key: str | None) -> None:
    if not settings.api_key:
        return
    candidate = header_key or bearer_key
    if not candidate:
        raise Unauthorized("this endpoint needs an API key (X-API-Key header or Bearer token)")
    if not key_matches(candidate, settings.api_key):
        raise Forbidden("the API key is not valid")


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def require_write_key(
    request: Request,
    header_key: Annotated[str | None, Depends(api_key_header)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    _check(_settings(request), header_key, credentials.credentials if credentials else None)


async def require_read_key(request: Request) -> None:
    settings = _settings(request)
    if settings.auth_reads:
        # The schemes read the request themselves, as they do as dependencies.
        credentials = await bearer(request)
        _check(
            settings,
            await api_key_header(request),
            credentials.credentials if credentials else None,
        )


WriteAccess = Depends(require_write_key)
ReadAccess = Depends(require_read_key)
# For `openapi_extra` of the routes that depend on ReadAccess.
READ_SECURITY_DOC: dict[str, Any] = {
    "security": [{api_key_header.scheme_name: []}, {bearer.scheme_name: []}]
}
