"""The encoder as the service runs it: LiteRT agrees with Keras, converted once, cached."""

from __future__ import annotations

import os
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


def test_litert_embeds_an_all_zero_vector_as_keras_does(model_dir: Path, tmp_path: Path) -> None:
    """The tiny model has no biases: a black image reaches normalisation as zeros."""
    info = read_model_info(model_dir)
    lite = load_model(prepare_runtime(info, settings_for(model_dir, tmp_path)))
    black = np.zeros((2, *info.image_size, 3), np.uint8)
    keras = Encoder(info, threads=1).embed(black)
    np.testing.assert_array_equal(keras, 0.0)
    np.testing.assert_array_equal(lite.embed(black), keras)


def start_script(model_dir: Path, data_dir: Path) -> list[str]:
    """A command that prepares and loads the model in a fresh process, as a start does.

    It prints the runtime and whether TensorFlow or Keras were imported.
    """
    script = data_dir / "start.py"
    script.write_text(
        "import logging, sys\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "from app.config import Settings\n"
        "from app.model_bundle import read_model_info\n"
        "from app.model_runtime import load_model, prepare_runtime\n"
        "if __name__ == '__main__':\n"
        "    logging.basicConfig(level=logging.INFO)\n"
        f"    info = read_model_info(Path({str(model_dir)!r}))\n"
        f"    settings = Settings(_env_file=None, data_dir=Path({str(data_dir)!r}))\n"
        "    spec = prepare_runtime(info, settings)\n"
        "    load_model(spec).embed(np.zeros((2, *info.image_size, 3), np.uint8))\n"
        "    print(spec.runtime, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    return [sys.executable, str(script)]


def start_as_the_service(model_dir: Path, data_dir: Path) -> tuple[str, str]:
    """Run `start_script`: (its answer, its log)."""
    out = subprocess.run(
        start_script(model_dir, data_dir), capture_output=True, text=True, timeout=180, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1], out.stderr


def test_the_service_never_imports_tensorflow_to_convert_or_to_reuse(
    model_dir: Path, tmp_path: Path
) -> None:
    path = litert_cache_path(tmp_path, read_model_info(model_dir))
    answer, log = start_as_the_service(model_dir, tmp_path)
    assert answer == "litert False False"  # converted, in a process of its own
    assert "converted" in log
    written = path.stat().st_mtime_ns
    assert start_as_the_service(model_dir, tmp_path)[0] == "litert False False"  # reused
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


@pytest.fixture(scope="module")
def exported_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory whose exporter wrote encoder.tflite and its probe."""
    from tests.conftest import write_model_dir
    from training.export import add_litert

    path = write_model_dir(tmp_path_factory.mktemp("models") / "exported", seed=3)
    add_litert(path)
    return path


def test_a_model_exported_with_its_litert_file_starts_without_converting(
    exported_model_dir: Path, tmp_path: Path
) -> None:
    answer, log = start_as_the_service(exported_model_dir, tmp_path)
    assert answer == "litert False False"
    assert "with the exporter's LiteRT file" in log
    assert "converted" not in log
    assert "converter" not in log
    info = read_model_info(exported_model_dir)
    cached = litert_cache_path(tmp_path, info)
    assert cached.read_bytes() == (exported_model_dir / "encoder.tflite").read_bytes()


def _shift_probe(model: Path) -> None:
    with np.load(model / "litert-probe.npz") as probe:
        images, embeddings = probe["images"], probe["embeddings"]
    np.savez(model / "litert-probe.npz", images=images, embeddings=embeddings + 0.01)


def _edit_model_json(model: Path, edit: Any) -> None:
    import json

    meta = json.loads((model / "model.json").read_text())
    edit(meta["litert"])
    (model / "model.json").write_text(json.dumps(meta))


TAMPERING = {
    "probe disagrees": _shift_probe,
    "file changed": lambda m: (m / "encoder.tflite").write_bytes(b"not a flatbuffer"),
    "file missing": lambda m: (m / "encoder.tflite").unlink(),
    "another model's": lambda m: _edit_model_json(m, lambda e: e.update(model_id="0" * 64)),
    "sha256 differs": lambda m: _edit_model_json(m, lambda e: e.update(sha256="0" * 64)),
}


@pytest.mark.parametrize("tampering", list(TAMPERING))
def test_an_exported_litert_file_that_fails_its_check_is_converted_again(
    exported_model_dir: Path, tmp_path: Path, tampering: str, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    model = shutil.copytree(exported_model_dir, tmp_path / "model")
    TAMPERING[tampering](model)
    info = read_model_info(model)
    with caplog.at_level("INFO", logger="lookalike.model"):
        spec = prepare_runtime(info, settings_for(model, tmp_path / "data"))
    assert spec.runtime == "litert"
    assert spec.litert_path == litert_cache_path(tmp_path / "data", info)
    assert "converting encoder.keras instead" in caplog.text
    assert "converted" in caplog.text
    images = np.random.default_rng(2).integers(0, 256, (3, *info.image_size, 3), np.uint8)
    np.testing.assert_allclose(
        load_model(spec).embed(images), Encoder(info, threads=1).embed(images), atol=1e-5
    )


def test_model_json_cannot_point_the_litert_file_outside_the_model(
    exported_model_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from app.errors import ModelDirectoryError

    model = shutil.copytree(exported_model_dir, tmp_path / "model")
    _edit_model_json(model, lambda e: e.update(file="../elsewhere.tflite"))
    with pytest.raises(ModelDirectoryError, match="outside the model directory"):
        read_model_info(model)


def test_a_data_directory_that_cannot_hold_the_cache_converts_for_this_run_only(
    model_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "litert").write_text("a file where the cache directory should be")
    info = read_model_info(model_dir)
    spec = prepare_runtime(info, settings_for(model_dir, tmp_path))
    assert spec.runtime == "litert"
    assert spec.litert_path is not None
    assert not spec.litert_path.is_relative_to(tmp_path)  # a temporary directory instead
    images = np.zeros((2, *info.image_size, 3), np.uint8)
    np.testing.assert_allclose(
        load_model(spec).embed(images), Encoder(info, threads=1).embed(images), atol=1e-5
    )
    assert not (tmp_path / "litert").with_suffix(".refused").exists()


def test_an_exported_litert_file_is_served_in_place_when_the_cache_cannot_be_written(
    exported_model_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "litert").write_text("a file where the cache directory should be")
    spec = prepare_runtime(
        read_model_info(exported_model_dir), settings_for(exported_model_dir, tmp_path)
    )
    assert (spec.runtime, spec.litert_path) == ("litert", exported_model_dir / "encoder.tflite")


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_a_converter_that_dies_leaves_the_model_on_tensorflow_for_this_start_only(
    model_dir: Path, tmp_path: Path
) -> None:
    """The converter is killed while it imports TensorFlow, as the kernel's OOM killer would."""
    import signal
    import time

    service = subprocess.Popen(
        start_script(model_dir, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        converters: list[int] = []
        while not converters and time.monotonic() < deadline and service.poll() is None:
            # The service's children are its fork server (and multiprocessing's
            # resource tracker); the converter is forked by the fork server.
            converters = [c for child in _children(service.pid) for c in _children(child)]
            time.sleep(0.02)
        assert converters, "no converter process appeared"
        for pid in converters:
            os.kill(pid, signal.SIGKILL)
        stdout, stderr = service.communicate(timeout=180)
    finally:
        service.kill()
    assert service.returncode == 0, stderr[-2000:]
    assert stdout.strip().splitlines()[-1] == "tensorflow True True"
    assert "the LiteRT converter's process died" in stderr
    path = litert_cache_path(tmp_path, read_model_info(model_dir))
    assert not path.with_suffix(".refused").exists()  # no verdict: the next start converts
    assert start_as_the_service(model_dir, tmp_path)[0] == "litert False False"
