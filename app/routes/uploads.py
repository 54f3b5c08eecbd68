"""Reading one uploaded file within its size limit."""

from __future__ import annotations

from starlette.datastructures import UploadFile

from app.errors import InvalidImage, PayloadTooLarge


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """The file's bytes, refusing more than `max_bytes` without reading past the limit."""
    if upload.size is not None and upload.size > max_bytes:
        raise PayloadTooLarge(_too_large(upload, max_bytes))
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(_too_large(upload, max_bytes))
    if not data:
        raise InvalidImage(f"file {upload.filename or ''!r} is empty")
    return data


def _too_large(upload: UploadFile, max_bytes: int) -> str:
    return (
        f"file {upload.filename or ''!r} is larger than the {max_bytes}-byte limit "
        "(LOOKALIKE_MAX_FILE_BYTES)"
    )
