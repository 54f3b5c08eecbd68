"""A multipart body validated in one pass, for the endpoint under the most load.

FastAPI validates each `Form()` and `File()` parameter on its own and walks
their annotations again on every request; for `/search`'s six fields that was
about a quarter of the event loop's time per request (cProfile of the route,
benchmarks/RESULTS.md). Here the body is parsed by the same Starlette parser
FastAPI uses and the text fields are validated by one pydantic model. Failures
raise FastAPI's own RequestValidationError, with the locations FastAPI gives,
so they answer 422 like every other field error; `openapi_body` describes the
same body in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

FieldsT = TypeVar("FieldsT", bound=BaseModel)


def validate_form(
    form: FormData, fields: type[FieldsT], *, files: Mapping[str, str]
) -> tuple[FieldsT, dict[str, UploadFile]]:
    """The validated text fields and the required file parts named in `files`.

    Like FastAPI's form handling, the last value of a repeated field counts and
    unknown fields are ignored.
    """
    errors: list[dict[str, Any]] = []
    text: dict[str, str] = {}
    for name, value in form.items():
        if isinstance(value, str):
            text[name] = value
        elif name in fields.model_fields:
            errors.append(_error(name, "string_type", "Input should be a text field, not a file"))
    uploads: dict[str, UploadFile] = {}
    for name in files:
        upload = form.get(name)
        if isinstance(upload, UploadFile):
            uploads[name] = upload
        else:
            errors.append(_error(name, "missing", "Field required"))
    parsed: FieldsT | None = None
    try:
        parsed = fields.model_validate(text)
    except ValidationError as exc:
        errors.extend(
            {**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)
        )
    if errors or parsed is None:
        raise RequestValidationError(errors)
    return parsed, uploads


def openapi_body(fields: type[BaseModel], *, files: Mapping[str, str]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its body with `validate_form`.

    `files` maps each file part to its description.
    """
    schema = fields.model_json_schema()
    if "$defs" in schema:
        raise ValueError(f"{fields.__name__} needs shared definitions; keep its fields inline")
    properties: dict[str, Any] = {
        name: {"type": "string", "format": "binary", "description": description}
        for name, description in files.items()
    }
    properties.update(schema.get("properties", {}))
    body = {
        "title": schema.get("title", fields.__name__),
        "type": "object",
        "required": [*files, *schema.get("required", [])],
        "properties": properties,
    }
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": body}}}}


def _error(name: str, kind: str, message: str) -> dict[str, Any]:
    return {"type": kind, "loc": ("body", name), "msg": message, "input": None}
