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
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.image_files import PREPROCESSING
from training.litert import LiteRtConversionError, convert_encoder

if TYPE_CHECKING:
    import keras

FORMAT_VERSION = 1
ENCODER_FILE = "encoder.keras"
MODEL_JSON = "model.json"
HISTORY_JSON = "history.json"
LITERT_FILE = "encoder.tflite"
PROBE_FILE = "litert-probe.npz"
# In the order they are moved in: model.json last, so whoever reads it finds
# the files it describes already in place.
EXPORTED_FILES = (ENCODER_FILE, LITERT_FILE, PROBE_FILE, HISTORY_JSON, MODEL_JSON)


class LiteRtWarning(UserWarning):
    """The model was exported without its LiteRT file; the service converts it at start."""


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
    """Write encoder.keras, its LiteRT file, model.json (and history.json); returns model.json.

    `provenance` must name at least `dataset`, `loss` and `epochs`; `created_at`
    and `library_versions` are added here so every export carries them. An
    encoder that LiteRT cannot run exactly is exported without encoder.tflite
    (a LiteRtWarning says why): the service then converts it, or runs it on
    TensorFlow.
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
        litert = _write_litert(encoder, image_size, meta["model_id"], staging)
        if litert is not None:
            meta["litert"] = litert
        _write_json(staging / MODEL_JSON, meta)
        if history is not None:
            _write_json(staging / HISTORY_JSON, history)
        _move_in(staging, out_dir)
    return meta


def add_litert(model_dir: Path) -> dict[str, Any]:
    """Give an exported model directory its LiteRT file; returns the new model.json.

    For directories exported before the exporter wrote one, or whose
    conversion a library upgrade now makes possible. encoder.keras and the
    model_id stay as they are, so catalogues built with the model keep it.
    """
    import keras

    meta = read_model_json(model_dir)
    encoder_path = model_dir / ENCODER_FILE
    if hashlib.sha256(encoder_path.read_bytes()).hexdigest() != meta.get("model_id"):
        raise ContractError(f"{encoder_path} does not match the model_id in {MODEL_JSON}")
    try:
        height, width = (int(v) for v in meta["image_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ContractError(f"{MODEL_JSON} has no usable image_size ({exc!r})") from exc
    encoder = keras.saving.load_model(encoder_path, compile=False)
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=".export-") as staging_name:
        staging = Path(staging_name)
        try:
            meta["litert"] = _litert_files(encoder, (height, width), meta["model_id"], staging)
        except LiteRtConversionError as exc:
            raise ContractError(str(exc)) from exc
        _write_json(staging / MODEL_JSON, meta)
        for name in (LITERT_FILE, PROBE_FILE, MODEL_JSON):
            shutil.move(staging / name, model_dir / name)
    return meta


def _write_litert(
    encoder: keras.Model, image_size: tuple[int, int], model_id: str, staging: Path
) -> dict[str, Any] | None:
    try:
        return _litert_files(encoder, image_size, model_id, staging)
    except LiteRtConversionError as exc:
        warnings.warn(f"exported without {LITERT_FILE}: {exc}", LiteRtWarning, stacklevel=3)
        return None


def _litert_files(
    encoder: keras.Model, image_size: tuple[int, int], model_id: str, staging: Path
) -> dict[str, Any]:
    """Write encoder.tflite and its probe into `staging`; returns model.json's "litert"."""
    converted = convert_encoder(encoder, image_size)
    (staging / LITERT_FILE).write_bytes(converted.flatbuffer)
    with (staging / PROBE_FILE).open("wb") as f:
        np.savez(f, images=converted.probe_images, embeddings=converted.probe_embeddings)
    return {
        "file": LITERT_FILE,
        "model_id": model_id,
        "sha256": hashlib.sha256(converted.flatbuffer).hexdigest(),
        "probe": PROBE_FILE,
        "max_difference": converted.max_difference,
    }


def _move_in(staging: Path, out_dir: Path) -> None:
    """Replace the export in `out_dir` by the one in `staging`, file by file."""
    for name in EXPORTED_FILES:
        if (staging / name).exists():
            shutil.move(staging / name, out_dir / name)
        else:
            (out_dir / name).unlink(missing_ok=True)


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
