"""Milvus filter expressions from client input, with nothing a client sends read as syntax.

Milvus Lite does not implement filter templating (`filter_params`), so values
are written as literals: strings double-quoted with every character the
expression grammar treats specially escaped, numbers only when they are finite
and fit Milvus' int64 / double. Anything that cannot be written exactly (a null,
a huge integer, a key with brackets, quotes or JSON-pointer characters) is left
out of the expression, which then selects a superset; `matches` checks every
returned row with the local backend's semantics and is the final word, also
because Milvus Lite compares JSON values with Python equality (true == 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from app.catalog import Metadata, MetadataFilter

INT64_MAX = 2**63 - 1

_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})
# Keys every Milvus release resolves to the same top-level JSON member.
_PLAIN_KEY = re.compile(r"[^\[\]\"'\\/~\x00-\x1f\x7f]+")


def string_literal(value: str) -> str:
    return '"' + value.translate(_ESCAPES) + '"'


def field_in(field: str, values: Iterable[str], *, negate: bool = False) -> str:
    """`field in [...]` over string values; pymilvus' own `ids=` does not escape them."""
    listed = ", ".join(string_literal(v) for v in values)
    return f"{field} {'not in' if negate else 'in'} [{listed}]"


def _literal(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if -INT64_MAX <= value <= INT64_MAX else None
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return string_literal(value)
    return None


def metadata_expression(metadata_filter: MetadataFilter, field: str = "metadata") -> str:
    """The part of an exact-match filter Milvus can evaluate; "" when none of it can."""
    clauses: list[str] = []
    for key, value in metadata_filter.items():
        literal = _literal(value)
        if literal is None or not _PLAIN_KEY.fullmatch(key):
            continue
        clauses.append(f"{field}[{string_literal(key)}] == {literal}")
    return " and ".join(clauses)


def all_of(*expressions: str) -> str:
    return " and ".join(f"({e})" for e in expressions if e)


def _same(stored: object, expected: object) -> bool:
    if expected is None:
        return stored is None
    if isinstance(expected, bool) or isinstance(stored, bool):
        return isinstance(expected, bool) and isinstance(stored, bool) and stored == expected
    if isinstance(expected, int | float):
        return isinstance(stored, int | float) and stored == expected
    return isinstance(stored, str) and stored == expected


def matches(metadata: Metadata, metadata_filter: MetadataFilter) -> bool:
    """Every key present with the same JSON type and value (1 == 1.0, but "1" != 1 != true)."""
    return all(
        key in metadata and _same(metadata[key], expected)
        for key, expected in metadata_filter.items()
    )
