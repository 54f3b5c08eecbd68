"""Writes the model directory that docs/model-directory.md specifies, and nothing else.

The service trusts `model.json` without loading TensorFlow, so this module
checks the encoder against the contract before writing: output shape
[N, embedding_dim], unit-norm rows, any input size accepted. Files are written
beside the target first and moved in, so a service or a second run never reads
half a model.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.image_files import PREPROCESSING

if TYPE_CHECKING:
    import keras

FORMAT_VERSION = 1
ENCODER_FILE = "encoder.keras"
MODEL_JSON = "model.json"
HISTORY_JSON = "history.json"


class ContractError(Exception):
    """The encoder or its metadata would break the model-directory contract."""


def library_versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def check_encoder(encoder: keras.Model, image_size: tuple[int, int], embedding_dim: int) -> None:
    """Raise ContractError unless the encoder behaves as the service expects."""
    rng = np.random.default_rng(0)
    for height, width in (image_size, (image_size[0] + 7, image_size[1] + 3)):
        batch = rng.uniform(0, 255, size=(2, height, width, 3)).astype(np.float32)
        output = np.asarray(encoder(batch, training=False))
        if output.shape != (2, embedding_dim) or output.dtype != np.float32:
            raise ContractError(
                f"encoder maps {batch.shape} to {output.shape} {output.dtype}, "
                f"not (2, {embedding_dim}) float32"
            )
        norms = np.linalg.norm(output, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            raise ContractError(f"encoder outputs are not L2-normalised (norms {norms})")


def export_model(
    encoder: keras.Model,
    out_dir: Path,
    *,
    image_size: tuple[int, int],
    match_threshold: float,
    provenance: dict[str, Any],
    evaluation: dict[str, Any],
    duplicate_threshold: float | None = None,
    history: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """Write encoder.keras, model.json (and history.json) into `out_dir`; returns model.json.

    `provenance` must name at least `dataset`, `loss` and `epochs`; `created_at`
    and `library_versions` are added here so every export carries them.
    """
    embedding_dim = int(encoder.output_shape[-1])
    check_encoder(encoder, image_size, embedding_dim)
    for key in ("dataset", "loss", "epochs"):
        if key not in provenance:
            raise ContractError(f"provenance needs {key!r}")
    if not -1.0 <= match_threshold <= 1.0:
        raise ContractError(f"match_threshold {match_threshold} is not a cosine similarity")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as staging_name:
        staging = Path(staging_name)
        encoder.save(staging / ENCODER_FILE)
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "model_id": hashlib.sha256((staging / ENCODER_FILE).read_bytes()).hexdigest(),
            "image_size": [int(image_size[0]), int(image_size[1])],
            "embedding_dim": embedding_dim,
            "metric": "cosine",
            "match_threshold": float(match_threshold),
            "preprocessing": dict(PREPROCESSING),
            "provenance": {
                **provenance,
                "created_at": datetime.now(UTC)
                .isoformat(timespec="seconds")
                .replace("+00:00", "Z"),
                "library_versions": library_versions(),
            },
            "evaluation": evaluation,
        }
        if duplicate_threshold is not None:
            meta["duplicate_threshold"] = float(duplicate_threshold)
        _write_json(staging / MODEL_JSON, meta)
        if history is not None:
            _write_json(staging / HISTORY_JSON, history)
        # The encoder goes first and model.json last: whoever sees the new
        # model.json finds the encoder it describes already in place.
        for name in (ENCODER_FILE, HISTORY_JSON, MODEL_JSON):
            if (staging / name).exists():
                shutil.move(staging / name, out_dir / name)
            else:
                (out_dir / name).unlink(missing_ok=True)
    return meta


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(_plain(value), indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _plain(value: Any) -> Any:
    """NumPy scalars and tuples as JSON types, non-finite floats as null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        number = float(value)
        return number if np.isfinite(number) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


def read_model_json(model_dir: Path) -> dict[str, Any]:
    """model.json of an exported directory, with a clear error when it is not one."""
    path = model_dir / MODEL_JSON
    if not path.is_file() or not (model_dir / ENCODER_FILE).is_file():
        raise ContractError(
            f"{model_dir} is not a model directory (needs {ENCODER_FILE} and {MODEL_JSON})"
        )
    meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return meta
