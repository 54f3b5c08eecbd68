"""The embedding worker process: per-item answers, and a service that outlives its crashes."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import embed_worker
from app.config import Settings
from app.embed_worker import EmbedWorker, InlineEmbedder, Upload
from app.errors import EmbeddingUnavailable, InvalidImage, UnsupportedMediaType
from app.image_preparer import ImagePreparer
from app.main import create_app
from app.model_bundle import read_model_info
from app.model_runtime import RuntimeSpec, load_model, prepare_runtime
from app.regions import Box
from tests.conftest import image_bytes, jpeg_cases


@pytest.fixture
def settings(model_dir: Path, tmp_path: Path) -> Settings:
    return Settings(_env_file=None, model_dir=model_dir, data_dir=tmp_path, threads=2)


@pytest.fixture
def spec(settings: Settings) -> RuntimeSpec:
    return prepare_runtime(read_model_info(settings.model_dir), settings)


@pytest.fixture
def worker(spec: RuntimeSpec, settings: Settings) -> Iterator[EmbedWorker]:
    restarts: list[int] = []
    w = EmbedWorker(spec, settings, on_restart=lambda: restarts.append(1))
    w.restarts = restarts  # type: ignore[attr-defined]
    yield w
    w.close()


def mixed_batch(spec: RuntimeSpec) -> list[Upload | np.ndarray]:
    height, width = spec.info.image_size
    pixels = np.random.default_rng(3).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    return [
        Upload(jpeg_cases()["photo 1/4 scale"]),
        pixels,
        Upload(jpeg_cases()["photo 1/4 scale"][:200]),  # the header is whole, the scan is cut off
        Upload(b"%PDF-1.4 not an image"),
        Upload(image_bytes(5), box=Box(0.0, 0.0, 0.5, 0.5)),
    ]


def test_the_worker_answers_each_item_as_this_process_would(
    worker: EmbedWorker, spec: RuntimeSpec, settings: Settings
) -> None:
    batch = mixed_batch(spec)
    got = worker(batch)
    inline = InlineEmbedder(ImagePreparer(spec.info, settings), load_model(spec))(batch)
    assert [type(o) for o in got] == [np.ndarray, np.ndarray, InvalidImage, UnsupportedMediaType,
                                      np.ndarray]  # fmt: skip
    assert [o.shape for o in got if isinstance(o, np.ndarray)] == [(1, 8), (2, 8), (1, 8)]
    for mine, theirs in zip(got, inline, strict=True):
        if isinstance(mine, np.ndarray):
            assert isinstance(theirs, np.ndarray)
            np.testing.assert_array_equal(mine, theirs)
        else:
            assert type(mine) is type(theirs)
            assert str(mine) == str(theirs)
    assert worker([]) == []


def test_a_killed_worker_fails_its_batch_and_the_next_batch_gets_a_new_one(
    worker: EmbedWorker, spec: RuntimeSpec
) -> None:
    batch = mixed_batch(spec)[:2]
    before = worker(batch)
    first = worker.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    lost = worker(batch)
    assert all(isinstance(o, EmbeddingUnavailable) for o in lost)
    assert EmbeddingUnavailable.status == 503
    after = worker(batch)
    assert worker.pid not in (None, first)
    assert worker.restarts == [1]  # type: ignore[attr-defined]
    for a, b in zip(before, after, strict=True):
        assert isinstance(a, np.ndarray)
        assert isinstance(b, np.ndarray)
        np.testing.assert_array_equal(a, b)


def test_a_hung_worker_is_killed_after_the_answer_timeout(
    worker: EmbedWorker, spec: RuntimeSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed_worker, "ANSWER_TIMEOUT_S", 0.5)
    hung = worker.pid
    assert hung is not None
    os.kill(hung, signal.SIGSTOP)
    try:
        lost = worker(mixed_batch(spec)[:1])
    finally:
        with contextlib.suppress(ProcessLookupError):  # it was killed, as it should be
            os.kill(hung, signal.SIGCONT)
    assert isinstance(lost[0], EmbeddingUnavailable)
    assert not os.path.exists(f"/proc/{hung}") or _state(hung) == "Z"
    assert isinstance(worker(mixed_batch(spec)[:1])[0], np.ndarray)


def test_a_worker_that_cannot_load_its_model_fails_at_start(
    spec: RuntimeSpec, settings: Settings, tmp_path: Path
) -> None:
    missing = RuntimeSpec("litert", spec.info, 1, tmp_path / "missing.tflite")
    with pytest.raises(RuntimeError, match="did not start"):
        EmbedWorker(missing, settings)


def test_close_stops_the_process(spec: RuntimeSpec, settings: Settings) -> None:
    worker = EmbedWorker(spec, settings)
    pid = worker.pid
    assert pid is not None
    worker.close()
    assert worker.pid is None
    assert not os.path.exists(f"/proc/{pid}") or _state(pid) == "Z"


def test_the_service_answers_503_while_its_worker_restarts_then_searches_again(
    settings: Settings,
) -> None:
    with TestClient(create_app(settings)) as c:
        indexed = c.post("/index", files={"file": ("a.png", image_bytes(1))}, data={"id": "a"})
        assert indexed.status_code == 200, indexed.text
        state = c.app.state.lookalike  # type: ignore[attr-defined]
        assert isinstance(state.embed, EmbedWorker)
        pid = state.embed.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        query = {"file": ("q.png", image_bytes(1))}
        lost = c.post("/search", files=query)
        assert lost.status_code == 503
        assert lost.json()["error"]["code"] == "embedding_unavailable"
        found = c.post("/search", files=query)
        assert found.status_code == 200, found.text
        assert found.json()["results"][0]["id"] == "a"
        assert "lookalike_embed_worker_restarts_total 1.0" in c.get("/metrics").text
    assert state.embed.pid is None


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
