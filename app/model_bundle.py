"""Reading the model directory, the one contract with `training/`.

Only `model.json` is read here, without TensorFlow, so the service can check a
model against its catalogue before paying for the TensorFlow import.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import ModelDirectoryError

SUPPORTED_FORMAT_VERSIONS = frozenset({1})
ENCODER_FILE = "encoder.keras"
MODEL_FILE = "model.json"


@dataclass(frozen=True)
class ExportedLiteRt:
    """The exporter's LiteRT conversion of encoder.keras, and the probe that checks it.

    The probe holds a few images and the embeddings Keras gave them at export,
    so LiteRT alone can show that the file embeds as encoder.keras does.
    """

    path: Path
    sha256: str
    model_id: str
    probe_path: Path


@dataclass(frozen=True)
class ModelInfo:
    """What the service needs to know about a model, from its model.json."""

    path: Path
    model_id: str
    image_size: tuple[int, int]
    embedding_dim: int
    match_threshold: float
    duplicate_threshold: float | None = None
    litert: ExportedLiteRt | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def encoder_path(self) -> Path:
        return self.path / ENCODER_FILE


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_model_info(model_dir: Path, *, verify_hash: bool = True) -> ModelInfo:
    """Validate the model directory against the contract, so a bad one fails at start-up.

    `verify_hash` re-hashes encoder.keras: model_id is what the catalogue records,
    so a file swapped under an unchanged model.json must not pass as the same model.
    """
    meta_path = model_dir / MODEL_FILE
    encoder_path = model_dir / ENCODER_FILE
    if not meta_path.is_file() or not encoder_path.is_file():
        raise ModelDirectoryError(
            f"{model_dir} is not a model directory (needs {MODEL_FILE} and {ENCODER_FILE}); "
            "train one with `python -m training train --out "
            f"{model_dir}` or set LOOKALIKE_MODEL_DIR"
        )
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelDirectoryError(f"{meta_path} is not readable JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelDirectoryError(f"{meta_path} must hold a JSON object")
    try:
        version = int(raw["format_version"])
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise ModelDirectoryError(
                f"{meta_path}: format_version {version} is not supported "
                f"(this service reads {sorted(SUPPORTED_FORMAT_VERSIONS)})"
            )
        if raw.get("metric", "cosine") != "cosine":
            raise ModelDirectoryError(f"{meta_path}: metric must be 'cosine'")
        height, width = (int(v) for v in raw["image_size"])
        duplicate = raw.get("duplicate_threshold")
        info = ModelInfo(
            path=model_dir,
            model_id=str(raw["model_id"]),
            image_size=(height, width),
            embedding_dim=int(raw["embedding_dim"]),
            match_threshold=float(raw["match_threshold"]),
            duplicate_threshold=None if duplicate is None else float(duplicate),
            litert=_exported_litert(model_dir, raw.get("litert")),
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelDirectoryError(f"{meta_path} does not follow the contract: {exc!r}") from exc
    if info.embedding_dim < 1 or min(info.image_size) < 1:
        raise ModelDirectoryError(f"{meta_path}: image_size and embedding_dim must be positive")
    if verify_hash and file_sha256(encoder_path) != info.model_id:
        raise ModelDirectoryError(
            f"{encoder_path} does not match model_id {info.model_id[:12]}... in {MODEL_FILE}: "
            "the encoder was replaced without re-exporting the model directory"
        )
    return info


def _exported_litert(model_dir: Path, entry: Any) -> ExportedLiteRt | None:
    """model.json's optional "litert" entry; its files are checked when the model loads."""
    if entry is None:
        return None
    names = [str(entry["file"]), str(entry["probe"])]
    if any(Path(name).name != name or name in {".", ".."} for name in names):
        raise ValueError(f"litert names files outside the model directory: {names}")
    return ExportedLiteRt(
        path=model_dir / names[0],
        sha256=str(entry["sha256"]),
        model_id=str(entry["model_id"]),
        probe_path=model_dir / names[1],
    )
