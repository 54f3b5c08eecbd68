"""Operations on the running service: switching it to a new model without downtime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Response

from app.dependencies import StateDep
from app.errors import (
    FeatureUnavailable,
    Forbidden,
    InvalidField,
    NotReady,
    ReindexBusy,
    Unauthorized,
    error_responses,
)
from app.schemas import ReindexState
from app.security import WriteAccess

router = APIRouter(prefix="/admin", tags=["operations"])


@router.post(
    "/reindex",
    summary="Re-embed the catalogue with a new model while serving, then switch",
    status_code=202,
    dependencies=[WriteAccess],
    responses=error_responses(
        InvalidField, ReindexBusy, FeatureUnavailable, Unauthorized, Forbidden, NotReady
    ),
)
async def start_reindex(
    state: StateDep,
    response: Response,
    model_dir: Annotated[
        str,
        Form(
            description="The new model directory, on the server, inside the folder that "
            "holds LOOKALIKE_MODEL_DIR (e.g. `models/v2`).",
        ),
    ],
) -> ReindexState:
    """Progress shows in `GET /index` (`reindex`); the switch is atomic."""
    allowed = state.settings.model_dir.resolve().parent
    target = Path(model_dir)
    if not target.is_absolute():
        target = Path.cwd() / target
    target = target.resolve()
    if not target.is_relative_to(allowed):
        raise InvalidField(f"model_dir must be inside {allowed}")
    assert state.reindex is not None
    status = state.reindex.start(target)
    response.headers["Location"] = "/index"
    return ReindexState.model_validate(status)
