"""The ops commands: bulk import and reindex, run as `python -m app ...` would run them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.catalog_store import CatalogStore
from app.cli import main
from app.config import Settings
from app.encoder import Encoder
from app.errors import CatalogBusy, ModelMismatch
from app.image_preparer import ImagePreparer
from app.local_catalog import LocalCatalog
from app.main import create_app
from app.model_bundle import read_model_info
from app.model_runtime import litert_cache_path
from app.reindex import Reindexer
from tests.conftest import backend_env, image_bytes, local_only


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, model_dir: Path, data_dir: Path, backend: str) -> None:
    """The environment `python -m app` reads, matching `make_settings` for the backend."""
    monkeypatch.setenv("LOOKALIKE_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LOOKALIKE_THREADS", "2")
    for name, value in backend_env(backend, data_dir).items():
        monkeypatch.setenv(name, value)


def _top(client: TestClient, data: bytes) -> dict:
    r = client.post("/search", files={"file": ("q.png", data)}, data={"k": "1"})
    return r.json()["results"][0]


@pytest.mark.usefixtures("env")
def test_import_a_folder_with_metadata_resumably(
    tmp_path: Path, make_settings, model_dir: Path, data_dir: Path
) -> None:
    folder = tmp_path / "photos"
    (folder / "shoes").mkdir(parents=True)
    (folder / "shoes" / "sku-1.png").write_bytes(image_bytes(1))
    (folder / "sku-2.jpg").write_bytes(image_bytes(2, fmt="JPEG"))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (folder / "notes.txt").write_text("not an image")
    meta = tmp_path / "meta.jsonl"
    meta.write_text(json.dumps({"id": "sku-1", "name": "red shoe"}) + "\n")

    assert main(["import", str(folder), "--metadata", str(meta)]) == 1  # one unreadable
    # Converted for LiteRT while TensorFlow was loaded anyway: not at the service's start.
    assert litert_cache_path(data_dir, read_model_info(model_dir)).is_file()
    with TestClient(create_app(make_settings())) as c:
        assert c.get("/index").json()["count"] == 2
        assert c.get("/index/sku-1").json()["metadata"] == {"name": "red shoe"}
        assert c.get("/index/sku-1/image").status_code == 200
        assert _top(c, image_bytes(1))["id"] == "sku-1"

    (folder / "broken.png").unlink()
    (folder / "sku-3.webp").write_bytes(image_bytes(3, fmt="WEBP"))
    assert main(["import", str(folder)]) == 0
    with TestClient(create_app(make_settings())) as c:
        assert c.get("/index").json()["count"] == 3
        # The second run skipped sku-1 rather than replacing it (metadata kept).
        assert c.get("/index/sku-1").json()["metadata"] == {"name": "red shoe"}


@local_only
@pytest.mark.usefixtures("env")
def test_import_refuses_while_a_server_holds_the_catalogue(tmp_path: Path, make_settings) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes(1))
    with TestClient(create_app(make_settings())):
        assert main(["import", str(folder)]) == 2
    assert main(["import", str(folder)]) == 0


@local_only
def test_reindex_switches_the_catalogue_to_a_new_model(
    monkeypatch: pytest.MonkeyPatch,
    make_settings,
    other_model_dir: Path,
    data_dir: Path,
    env: None,
) -> None:
    with TestClient(create_app(make_settings())) as c:
        for seed in range(5):
            c.post("/index", files={"file": ("x.png", image_bytes(seed))}, data={"id": f"i{seed}"})
    with (
        pytest.raises(ModelMismatch),
        TestClient(create_app(make_settings(model_dir=other_model_dir))),
    ):
        pass

    monkeypatch.setenv("LOOKALIKE_MODEL_DIR", str(other_model_dir))
    shutil.rmtree(data_dir / "litert")  # the refused start above converted the new model too
    assert main(["reindex", "--model", str(other_model_dir)]) == 0
    assert litert_cache_path(data_dir, read_model_info(other_model_dir)).is_file()
    with TestClient(create_app(make_settings(model_dir=other_model_dir))) as c:
        stats = c.get("/index").json()
        assert stats["count"] == 5
        assert stats["model_id"] == read_model_info(other_model_dir).model_id
        for seed in range(5):
            top = _top(c, image_bytes(seed))
            assert top["id"] == f"i{seed}"
            assert top["score"] > 0.95  # re-embedded from the kept JPEG copy
        assert c.get("/index/i0").json()["model_id"] == stats["model_id"]


@local_only
def test_a_crash_before_the_switch_leaves_the_old_catalogue_whole(
    make_settings, model_dir: Path, other_model_dir: Path
) -> None:
    settings: Settings = make_settings()
    with TestClient(create_app(settings)) as c:
        for seed in range(4):
            c.post("/index", files={"file": ("x.png", image_bytes(seed))}, data={"id": f"i{seed}"})
    new = read_model_info(other_model_dir)
    store = CatalogStore(settings.database_path)
    reindexer = Reindexer(store, new, Encoder(new, threads=2), ImagePreparer(new, settings))
    reindexer.embed_pending(batch_size=2)
    assert reindexer.pending_count() == 0
    store.close()  # "crash": the new embeddings are written, the switch never happened

    old = read_model_info(model_dir)
    catalog = LocalCatalog(settings, model_id=old.model_id, embedding_dim=old.embedding_dim)
    try:
        assert catalog.stats().count == 4
        with pytest.raises(CatalogBusy):
            LocalCatalog(settings, model_id=old.model_id, embedding_dim=old.embedding_dim)
    finally:
        catalog.close()
    with TestClient(create_app(settings)) as c:
        assert _top(c, image_bytes(2))["id"] == "i2"
        assert _top(c, image_bytes(2))["score"] == pytest.approx(1.0, abs=1e-4)
        # A change after the interrupted run makes that row pending again.
        c.post("/index", files={"file": ("x.png", image_bytes(9))}, data={"id": "i1"})
    store = CatalogStore(settings.database_path)
    reindexer = Reindexer(store, new, Encoder(new, threads=2), ImagePreparer(new, settings))
    assert reindexer.pending_count() == 1
    reindexer.embed_pending()
    assert reindexer.switch().items == 4
    store.close()
    with TestClient(create_app(make_settings(model_dir=other_model_dir))) as c:
        assert _top(c, image_bytes(9))["id"] == "i1"
