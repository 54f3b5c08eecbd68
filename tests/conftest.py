"""Shared fixtures: a tiny model directory built to the contract, images, fresh apps."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

TEST_IMAGE_SIZE = (16, 16)
TEST_EMBEDDING_DIM = 8


def write_model_dir(path: Path, *, seed: int, threshold: float = 0.9) -> Path:
    """A model directory as `training/` would export it, from Keras' own layers only."""
    import keras

    keras.utils.set_random_seed(seed)
    height, width = TEST_IMAGE_SIZE
    inputs = keras.Input(shape=(None, None, 3))
    x = keras.layers.Resizing(height, width)(inputs)
    x = keras.layers.Rescaling(1 / 255)(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(TEST_EMBEDDING_DIM)(x)
    outputs = keras.layers.UnitNormalization()(x)
    model = keras.Model(inputs, outputs)
    path.mkdir(parents=True, exist_ok=True)
    encoder = path / "encoder.keras"
    model.save(encoder)
    meta = {
        "format_version": 1,
        "model_id": hashlib.sha256(encoder.read_bytes()).hexdigest(),
        "image_size": [height, width],
        "embedding_dim": TEST_EMBEDDING_DIM,
        "metric": "cosine",
        "match_threshold": threshold,
        "duplicate_threshold": 0.9999,
        "preprocessing": {"resize": "bilinear", "fit": "stretch"},
        "provenance": {"dataset": "test", "loss": "none", "epochs": 0},
        "evaluation": {},
    }
    (path / "model.json").write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("models") / "tiny", seed=1)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("models") / "other", seed=2)


def image_bytes(seed: int, *, size: tuple[int, int] = (24, 24), fmt: str = "PNG") -> bytes:
    """A distinct image per seed: coloured blocks, so the tiny encoder tells them apart."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((size[1] // 4, size[0] // 4, 1), dtype=np.uint8))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour gradients and noise: what JPEG's subsampling and DCT scaling act on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    pixels = np.stack(
        [
            128 + 100 * np.sin(6 * x + 3 * y + seed),
            128 + 100 * np.cos(5 * y - 2 * x),
            128 + 80 * np.sin(9 * x * y),
        ],
        axis=-1,
    )
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def jpeg(
    width: int,
    height: int,
    *,
    seed: int = 0,
    mode: str = "RGB",
    subsampling: int = 2,
    progressive: bool = False,
    orientation: int | None = None,
) -> bytes:
    image = photo(width, height, seed).convert(mode)
    options: dict[str, Any] = {"quality": 85, "progressive": progressive}
    if mode == "RGB":
        options["subsampling"] = subsampling
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif
    out = io.BytesIO()
    image.save(out, "JPEG", **options)
    return out.getvalue()


@functools.cache
def jpeg_cases() -> dict[str, bytes]:
    """JPEGs of the kinds uploads come in: sizes across draft scales, subsampling, EXIF turns."""
    return {
        "photo 1/4 scale": jpeg(256, 256),
        "odd size, 1/2 scale": jpeg(257, 131, seed=1),
        "huge, 1/8 scale": jpeg(1200, 900, seed=2),
        "smaller than the model": jpeg(20, 30, seed=3),
        "4:4:4": jpeg(200, 120, seed=4, subsampling=0),
        "progressive": jpeg(300, 200, seed=6, progressive=True),
        "greyscale": jpeg(150, 100, seed=7, mode="L"),
        "EXIF orientation 6": jpeg(180, 100, seed=16, orientation=6),
    }


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


BACKENDS = ("local", "milvus")
# For tests of one backend's own machinery (FAISS snapshots, SQLite under kill -9).
local_only = pytest.mark.parametrize("backend", ["local"])


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test that builds settings runs once per catalogue backend."""
    return str(request.param)


def backend_env(backend: str, data_dir: Path) -> dict[str, str]:
    """LOOKALIKE_* variables selecting a backend; Milvus is Milvus Lite in the data directory.

    The FLAT index keeps Milvus' answers exact, as the local default is, so the
    same assertions hold on both.
    """
    if backend == "local":
        return {}
    return {
        "LOOKALIKE_BACKEND": "milvus",
        "LOOKALIKE_MILVUS_URI": str(data_dir / "milvus.db"),
        "LOOKALIKE_MILVUS_INDEX_TYPE": "FLAT",
        "LOOKALIKE_MILVUS_INDEX_PARAMS": "{}",
        "LOOKALIKE_MILVUS_SEARCH_PARAMS": "{}",
    }


@pytest.fixture
def make_settings(model_dir: Path, data_dir: Path, backend: str):
    from app.config import Settings

    chosen = {
        name.removeprefix("LOOKALIKE_").lower(): value
        for name, value in backend_env(backend, data_dir).items()
    }

    def make(**overrides: object) -> Settings:
        values: dict[str, Any] = {"model_dir": model_dir, "data_dir": data_dir, "threads": 2}
        values.update(chosen)
        values.update(overrides)
        return Settings(_env_file=None, **values)

    yield make
    if "milvus_uri" in chosen:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(chosen["milvus_uri"])


@pytest.fixture
def client(make_settings) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(make_settings())) as c:
        yield c
