"""Validation of the text fields that travel beside uploads (ids, metadata, filters).

Multipart fields arrive as strings, so JSON-typed fields are parsed and checked
here, each failure an InvalidField (422) that names the field.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

from app.catalog import Metadata, MetadataFilter
from app.errors import InvalidField

MAX_ID_LENGTH = 256
# Paths under /index that are routes, not items.
# Paths under /index that are routes, not items; "." and ".." are rewritten by
# every HTTP client before a request leaves, so no URL could reach them.
RESERVED_IDS = frozenset({"facets", ".", ".."})
MAX_METADATA_BYTES = 16_384


def validate_id(value: str, field: str = "id") -> str:
    """Ids are opaque: any Unicode, 1-256 characters, but no control characters."""
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise InvalidField(f"{field} must be 1 to {MAX_ID_LENGTH} characters long")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise InvalidField(f"{field} must not contain control characters")
    if value in RESERVED_IDS:
        raise InvalidField(f"{field} {value!r} is reserved: no /index/{{id}} URL can name it")
    return value


def derive_id(data: bytes) -> str:
    """An id from the image bytes, so uploading the same file twice is one item."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json_object(text: str, field: str) -> dict[str, Any]:
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise InvalidField(f"{field} is larger than {MAX_METADATA_BYTES} bytes")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidField(f"{field} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidField(f"{field} must be a JSON object")
    return value


INT64 = range(-(2**63), 2**63)


def _check_integers(value: object, field: str) -> None:
    """Integers beyond 64 bits fit no index (SQLite's or Milvus'), so refuse them upfront."""
    if isinstance(value, bool):
        return
    if isinstance(value, int) and value not in INT64:
        raise InvalidField(f"{field} holds an integer beyond 64 bits")
    if isinstance(value, dict):
        for key, inner in value.items():
            _check_integers(inner, f"{field}.{key}")
    elif isinstance(value, list):
        for inner in value:
            _check_integers(inner, field)


def parse_metadata(text: str | None, field: str = "metadata") -> Metadata:
    if text is None or not text.strip():
        return {}
    value = _json_object(text, field)
    _check_integers(value, field)
    return value


def parse_filter(text: str | None) -> MetadataFilter | None:
    """A filter is a flat object of key -> exact value (string, number, boolean or null)."""
    if text is None or not text.strip():
        return None
    value = _json_object(text, "filter")
    _check_integers(value, "filter")
    for key, expected in value.items():
        if not isinstance(expected, str | int | float | bool) and expected is not None:
            raise InvalidField(
                f"filter.{key} must be a string, number, boolean or null (exact match)"
            )
    return value
