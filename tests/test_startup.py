"""What start-up reads: a snapshot plus the rows changed after it, and nothing else.

Real SQLite and FAISS throughout; the catalogue is opened without the HTTP
service, since only its own start-up is under test here.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.catalog import NewItem
from app.catalog_store import CatalogStore
from app.config import Settings
from app.local_catalog import SNAPSHOT_FILE, SNAPSHOT_META, LocalCatalog
from app.vector_index import FlatIndex, faiss

DIM = 8
MODEL = "m" * 64


def unit_vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def items(ids: range, seed: int) -> list[NewItem]:
    vectors = unit_vectors(len(ids), seed)
    return [NewItem(id=f"i{i}", embedding=v) for i, v in zip(ids, vectors, strict=True)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CatalogStore]:
    store = CatalogStore(tmp_path / "catalog.sqlite3")
    yield store
    store.close()


def write(store: CatalogStore, new: list[NewItem]) -> np.ndarray:
    with store.transaction() as db:
        return store.upsert(db, new, MODEL)[1]


def delete(store: CatalogStore, item_id: str) -> None:
    with store.transaction() as db:
        store.delete(db, item_id)


def test_replay_yields_exactly_the_rows_changed_after_a_seq_in_key_order(
    store: CatalogStore,
) -> None:
    write(store, items(range(0, 50), seed=1))
    seen = store.current_seq()
    write(store, items(range(40, 45), seed=2))  # updates of rows older than `seen`
    fresh = items(range(50, 57), seed=3)
    write(store, fresh)
    delete(store, "i42")
    delete(store, "i51")

    for batch in (1, 3, 1000):
        pages = list(store.iter_embeddings(after_seq=seen, batch=batch))
        keys = np.concatenate([k for k, _ in pages])
        vectors = np.concatenate([v for _, v in pages])
        expected = [f"i{i}" for i in [40, 41, 43, 44, 50, 52, 53, 54, 55, 56]]
        assert keys.tolist() == sorted(keys.tolist())
        assert [store.describe([int(k)])[int(k)][0] for k in keys] == expected
        for key, vector in zip(keys, vectors, strict=True):
            item_id = store.describe([int(key)])[int(key)][0]
            np.testing.assert_array_equal(vector, store.get_embedding(item_id))
    assert list(store.iter_embeddings(after_seq=store.current_seq())) == []


def _vm_steps(db: sqlite3.Connection, run: object) -> int:
    """SQLite virtual-machine steps (in units of 100) that `run()` takes on this connection."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    db.set_progress_handler(count, 100)
    try:
        run()  # type: ignore[operator]
    finally:
        db.set_progress_handler(None, 100)
    return steps


def test_replaying_no_changes_does_not_step_through_every_row(store: CatalogStore) -> None:
    # Ordered by key, SQLite used to walk the whole table to find no row newer
    # than the snapshot: at 1M items that read the whole catalogue file.
    for start in range(0, 20_000, 5_000):
        write(store, items(range(start, start + 5_000), seed=start))
    write(store, items(range(7, 8), seed=99))
    latest = store.current_seq()
    db = store._db
    everything = _vm_steps(db, lambda: list(store.iter_embeddings()))
    nothing = _vm_steps(db, lambda: list(store.iter_embeddings(after_seq=latest)))
    one = _vm_steps(db, lambda: list(store.iter_embeddings(after_seq=latest - 1)))
    assert everything > 1000
    assert nothing < 10
    assert one < 10


def settings_for(data_dir: Path) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, model_dir=data_dir / "no-model")


def test_start_up_loads_the_snapshot_and_replays_only_later_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path)
    catalog = LocalCatalog(settings, model_id=MODEL, embedding_dim=DIM)
    catalog.upsert(items(range(300), seed=1))
    catalog.close()  # writes the snapshot
    saved = {name: (tmp_path / name).read_bytes() for name in (SNAPSHOT_FILE, SNAPSHOT_META)}

    catalog = LocalCatalog(settings, model_id=MODEL, embedding_dim=DIM)
    catalog.upsert(items(range(10, 13), seed=2))
    catalog.delete("i20")
    catalog.close()
    for name, content in saved.items():  # as if the process died before snapshotting
        (tmp_path / name).write_bytes(content)

    with caplog.at_level(logging.INFO, logger="lookalike.catalog"):
        catalog = LocalCatalog(settings, model_id=MODEL, embedding_dim=DIM)
    try:
        assert "299 items (snapshot read in" in caplog.text
        assert "3 changes replayed" in caplog.text
        assert catalog.stats().count == 299
        for item_id in ("i10", "i11", "i12", "i150"):
            query = catalog.get_embedding(item_id)
            assert query is not None
            hit = catalog.search(query[None, :], 1)[0][0]
            assert (hit.id, hit.score) == (item_id, pytest.approx(1.0, abs=1e-5))
        assert "i20" not in {h.id for h in catalog.search(unit_vectors(20, 7), 299)[0]}
    finally:
        catalog.close()


def test_an_hnsw_snapshot_built_with_a_smaller_ef_construction_is_rebuilt_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Raising LOOKALIKE_HNSW_EF_CONSTRUCTION applies to the whole graph, not to new nodes only."""
    older = Settings(
        _env_file=None,
        data_dir=tmp_path,
        model_dir=tmp_path / "no-model",
        index_type="hnsw",
        hnsw_ef_construction=40,
    )
    catalog = LocalCatalog(older, model_id=MODEL, embedding_dim=DIM)
    catalog.upsert(items(range(200), seed=3))
    catalog.close()
    newer = older.model_copy(update={"hnsw_ef_construction": 80})
    with caplog.at_level(logging.INFO, logger="lookalike.catalog"):
        catalog = LocalCatalog(newer, model_id=MODEL, embedding_dim=DIM)
    try:
        assert "built with efConstruction 40, below the configured 80" in caplog.text
        assert "200 items (rebuilt from SQLite" in caplog.text
        query = catalog.get_embedding("i42")
        assert query is not None
        assert catalog.search(query[None, :], 1)[0][0].id == "i42"
    finally:
        catalog.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lookalike.catalog"):
        catalog = LocalCatalog(newer, model_id=MODEL, embedding_dim=DIM)
    catalog.close()
    assert "200 items (snapshot read in" in caplog.text  # the rebuilt graph was kept


def test_a_flat_snapshot_written_with_the_older_reverse_map_still_loads(tmp_path: Path) -> None:
    vectors = unit_vectors(40, seed=5)
    old = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    old.add_with_ids(vectors, np.arange(100, 140, dtype=np.int64))
    path = tmp_path / "index.faiss"
    faiss.write_index(old, str(path))

    index = FlatIndex(DIM)
    index.load(path)
    assert len(index) == 40
    assert index.search(vectors[3:4], 1)[1].tolist() == [[103]]
    index.remove(np.array([103], dtype=np.int64))
    index.replace(np.array([104], dtype=np.int64), vectors[3:4])
    assert index.search(vectors[3:4], 1)[1].tolist() == [[104]]
    assert len(index) == 39


def test_a_snapshot_that_is_not_a_flat_inner_product_index_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    faiss.write_index(faiss.IndexIDMap(faiss.IndexFlatL2(DIM)), str(path))
    with pytest.raises(ValueError, match="not a flat inner-product index"):
        FlatIndex(DIM).load(path)


def test_the_serving_process_loads_the_encoder_without_scikit_learn(model_dir: Path) -> None:
    code = (
        "import sys\n"
        "from app.commands.serve import hide_unused_modules\n"
        "hide_unused_modules()\n"
        "from app.encoder import Encoder\n"
        "from pathlib import Path\n"
        "from app.model_bundle import read_model_info\n"
        f"Encoder(read_model_info(Path({str(model_dir)!r})), threads=1)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn' and sys.modules[m]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_serving_process_keeps_its_start_up_out_of_full_collections(
    model_dir: Path, tmp_path: Path
) -> None:
    """Only `python -m app serve` freezes (create_app(freeze_gc=True)): tests make many apps."""
    code = (
        "import asyncio, gc\n"
        "from pathlib import Path\n"
        "from app.config import Settings\n"
        "from app.main import create_app\n"
        "async def frozen(freeze):\n"
        f"    settings = Settings(_env_file=None, model_dir=Path({str(model_dir)!r}),\n"
        f"                        data_dir=Path({str(tmp_path)!r}) / 'data')\n"
        "    app = create_app(settings, freeze_gc=freeze)\n"
        "    async with app.router.lifespan_context(app):\n"
        "        return gc.get_freeze_count()\n"
        "if __name__ == '__main__':\n"
        "    print(asyncio.run(frozen(False)), asyncio.run(frozen(True)) > 10_000)\n"
    )
    script = tmp_path / "freeze.py"
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "0 True"
