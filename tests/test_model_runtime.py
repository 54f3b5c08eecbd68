"""The encoder as the service runs it: LiteRT agrees with Keras, converted once, cached."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app import model_runtime
from app.config import Settings
from app.encoder import Encoder
from app.model_bundle import read_model_info
from app.model_runtime import LiteRtModel, litert_cache_path, load_model, prepare_runtime


def settings_for(model_dir: Path, data_dir: Path, **values: Any) -> Settings:
    return Settings(_env_file=None, model_dir=model_dir, data_dir=data_dir, threads=2, **values)


def test_litert_embeds_like_keras_at_every_batch_size(model_dir: Path, tmp_path: Path) -> None:
    info = read_model_info(model_dir)
    spec = prepare_runtime(info, settings_for(model_dir, tmp_path))
    assert spec.runtime == "litert"
    assert spec.litert_path is not None
    assert spec.litert_path.is_file()
    lite = load_model(spec)
    assert isinstance(lite, LiteRtModel)
    keras = Encoder(info, threads=1)
    rng = np.random.default_rng(0)
    for batch in (1, 3, 1, 7, 0):  # the interpreter is resized between them
        images = rng.integers(0, 256, (batch, *info.image_size, 3), dtype=np.uint8)
        got = lite.embed(images)
        assert got.shape == (batch, info.embedding_dim)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, keras.embed(images), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_the_service_never_imports_tensorflow_to_convert_or_to_reuse(
    model_dir: Path, tmp_path: Path
) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "from app.config import Settings\n"
        "from app.model_bundle import read_model_info\n"
        "from app.model_runtime import load_model, prepare_runtime\n"
        "if __name__ == '__main__':\n"
        f"    info = read_model_info(Path({str(model_dir)!r}))\n"
        f"    settings = Settings(_env_file=None, data_dir=Path({str(tmp_path)!r}))\n"
        "    spec = prepare_runtime(info, settings)\n"
        "    load_model(spec).embed(np.zeros((2, *info.image_size, 3), np.uint8))\n"
        "    print(spec.runtime, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    script = tmp_path / "start.py"
    script.write_text(code)
    info = read_model_info(model_dir)
    path = litert_cache_path(tmp_path, info)

    def start() -> str:
        out = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=180, check=False
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip().splitlines()[-1]

    assert start() == "litert False False"  # converted, in a process of its own
    written = path.stat().st_mtime_ns
    assert start() == "litert False False"  # reused
    assert path.stat().st_mtime_ns == written


def test_a_conversion_that_disagrees_with_keras_is_refused_once_and_served_by_tensorflow(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = read_model_info(model_dir)
    settings = settings_for(model_dir, tmp_path)
    monkeypatch.setattr(model_runtime, "AGREEMENT", -1.0)  # no conversion is close enough
    spec = prepare_runtime(info, settings)
    assert spec.runtime == "tensorflow"
    path = litert_cache_path(tmp_path, info)
    assert not path.exists()
    reason = path.with_suffix(".refused").read_text()
    assert "differs from Keras" in reason
    assert not list(path.parent.glob("*.checking"))
    monkeypatch.undo()
    # The verdict is remembered: no second conversion at the next start.
    assert prepare_runtime(info, settings).runtime == "tensorflow"
    assert isinstance(load_model(spec), Encoder)


def test_tensorflow_is_served_when_asked_for(model_dir: Path, tmp_path: Path) -> None:
    info = read_model_info(model_dir)
    spec = prepare_runtime(info, settings_for(model_dir, tmp_path, model_runtime="tensorflow"))
    assert (spec.runtime, spec.litert_path) == ("tensorflow", None)
    assert not (tmp_path / "litert").exists()
    images = np.zeros((2, *info.image_size, 3), np.uint8)
    assert load_model(spec).embed(images).shape == (2, info.embedding_dim)
