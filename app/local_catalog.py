"""The `local` backend: SQLite is the truth, a FAISS index in memory answers searches.

A write commits to SQLite first and then updates the index, under one write
lock, so the two never disagree for longer than that lock is held and a crash
between them loses nothing: the index is rebuilt from SQLite at start-up, or
reloaded from a snapshot and brought forward by replaying later changes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from app.catalog import (
    Catalog,
    CatalogStats,
    Hit,
    MetadataFilter,
    NewItem,
    StoredItem,
    UpsertOutcome,
    deepen_until_k,
)
from app.catalog_store import CatalogStore
from app.config import Settings
from app.data_lock import DataDirLock
from app.errors import InvalidField, ModelMismatch
from app.rwlock import ReadWriteLock
from app.vector_index import VectorIndex, build_index

log = logging.getLogger("lookalike.catalog")

SNAPSHOT_FILE = "index.faiss"
SNAPSHOT_META = "index.json"


def reindex_hint(settings: Settings) -> str:
    return (
        f"re-embed the stored images with `python -m app reindex --model {settings.model_dir}`, "
        "or point LOOKALIKE_DATA_DIR at another directory"
    )


class LocalCatalog(Catalog):
    """SQLite + FAISS in this process; the default backend."""

    def __init__(
        self,
        settings: Settings,
        *,
        model_id: str,
        embedding_dim: int,
        on_checked: Callable[[], None] | None = None,
    ) -> None:
        """`on_checked` runs once the data directory and the model are accepted (open_catalog)."""
        self._settings = settings
        self._dim = embedding_dim
        self._lock_file = DataDirLock(settings.data_dir, "a lookalike process")
        self._store = CatalogStore(settings.database_path)
        try:
            self._model_id = self._check_model(model_id, embedding_dim)
            if on_checked is not None:
                on_checked()
        except BaseException:
            self._store.close()
            self._lock_file.release()
            raise
        self._write_lock = threading.Lock()
        self._index_lock = ReadWriteLock()
        self._index = build_index(settings, embedding_dim)
        self._changes_since_snapshot = 0
        self._duplicates_cache: tuple[tuple[float, int, int, str], list[tuple[str, str]]] | None = (
            None
        )
        self._snapshotter = ThreadPoolExecutor(1, thread_name_prefix="snapshot")
        self._snapshot_job: Future[None] | None = None
        self._load_index()

    # start-up ---------------------------------------------------------------

    def _check_model(self, model_id: str, embedding_dim: int) -> str:
        stored = self._store.get_meta("model_id")
        # Counted only to word the refusal: a COUNT(*) walks an index of every row.
        if stored is not None and stored != model_id and (count := self._store.count()):
            raise ModelMismatch(
                f"the catalogue in {self._settings.data_dir} holds {count} embeddings made by "
                f"model {stored[:12]}, but the service loads model {model_id[:12]} from "
                f"{self._settings.model_dir}; embeddings of two models cannot be mixed: "
                + reindex_hint(self._settings)
            )
        with self._store.transaction() as db:
            self._store.set_meta(db, "model_id", model_id)
            self._store.set_meta(db, "embedding_dim", str(embedding_dim))
        return model_id

    def _snapshot_paths(self) -> tuple[Path, Path]:
        return self._settings.data_dir / SNAPSHOT_FILE, self._settings.data_dir / SNAPSHOT_META

    def _load_index(self) -> None:
        started = time.perf_counter()
        after = self._load_snapshot()
        loaded = time.perf_counter()
        if after is not None:
            self._index.remove(self._store.deleted_after(after))
        replayed = 0
        for keys, vectors in self._store.iter_embeddings(after_seq=after or 0):
            if after is None:
                self._index.add(keys, vectors)
            else:
                self._index.replace(keys, vectors)
            replayed += len(keys)
        self._changes_since_snapshot = replayed
        now = time.perf_counter()
        if after is None:
            source = f"rebuilt from SQLite in {now - loaded:.2f} s"
        else:
            source = (
                f"snapshot read in {loaded - started:.2f} s, "
                f"{replayed} changes replayed in {now - loaded:.2f} s"
            )
        log.info("index ready: %d items (%s) in %.2f s", len(self._index), source, now - started)

    def _load_snapshot(self) -> int | None:
        """Load the snapshot if it belongs to this model and index; its sequence number."""
        index_path, meta_path = self._snapshot_paths()
        try:
            meta = json.loads(meta_path.read_text())
            if (
                meta["model_id"] != self._model_id
                or meta["kind"] != self._index.kind
                or meta["dim"] != self._dim
                or meta["seq"] > self._store.current_seq()
            ):
                return None
            self._index.load(index_path)
            return int(meta["seq"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            log.warning("ignoring the index snapshot (%s); rebuilding it from SQLite", exc)
            self._index = build_index(self._settings, self._dim)
            return None

    def snapshot(self) -> None:
        """Write the index and the sequence it reflects, so start-up replays only the rest."""
        with self._write_lock:
            seq = self._store.current_seq()
            with self._index_lock.read():
                data = self._index.serialize()
            self._changes_since_snapshot = 0
        index_path, meta_path = self._snapshot_paths()
        tmp = index_path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, index_path)
        meta = {"model_id": self._model_id, "kind": self._index.kind, "dim": self._dim, "seq": seq}
        meta_tmp = meta_path.with_suffix(".tmp")
        meta_tmp.write_text(json.dumps(meta))
        os.replace(meta_tmp, meta_path)

    def _after_write(self, changes: int) -> None:
        self._changes_since_snapshot += changes
        if self._changes_since_snapshot >= self._settings.snapshot_every and (
            self._snapshot_job is None or self._snapshot_job.done()
        ):
            self._snapshot_job = self._snapshotter.submit(self.snapshot)

    # model switch (online reindex) ---------------------------------------------

    @property
    def store(self) -> CatalogStore:
        return self._store

    def new_index(self, dim: int) -> VectorIndex:
        return build_index(self._settings, dim)

    def adopt(self, model_id: str, index: VectorIndex) -> None:
        """Serve another model's index; the caller has switched the rows already."""
        with self._write_lock, self._index_lock:
            self._model_id = model_id
            self._dim = index.dim
            self._index = index
            self._changes_since_snapshot = max(1, self._changes_since_snapshot)

    # the interface ----------------------------------------------------------

    @property
    def model_id(self) -> str | None:
        return self._model_id

    def upsert(self, items: Sequence[NewItem]) -> list[UpsertOutcome]:
        if not items:
            return []
        vectors = np.stack([np.asarray(i.embedding, dtype=np.float32) for i in items])
        if vectors.shape[1] != self._dim:
            raise InvalidField(f"embeddings must have {self._dim} dimensions")
        with self._write_lock:
            with self._store.transaction() as db:
                outcomes, keys = self._store.upsert(db, items, self._model_id)
            # Last write wins when one request repeats an id.
            _, last = np.unique(keys[::-1], return_index=True)
            chosen = len(keys) - 1 - last
            with self._index_lock:
                self._index.replace(keys[chosen], vectors[chosen])
            self._after_write(len(items))
        return outcomes

    def delete(self, item_id: str) -> bool:
        with self._write_lock:
            with self._store.transaction() as db:
                key = self._store.delete(db, item_id)
            if key is None:
                return False
            with self._index_lock:
                self._index.remove(np.array([key], dtype=np.int64))
            self._after_write(1)
        return True

    def get(self, item_id: str) -> StoredItem | None:
        return self._store.get(item_id)

    def get_embedding(self, item_id: str) -> np.ndarray | None:
        return self._store.get_embedding(item_id)

    def get_image(self, item_id: str) -> bytes | None:
        return self._store.get_image(item_id)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        min_score: float | None = None,
        metadata_filter: MetadataFilter | None = None,
        exclude_ids: Sequence[str] = (),
        group_by_product: bool = False,
    ) -> list[list[Hit]]:
        allowed = self._store.keys_matching(metadata_filter) if metadata_filter else None
        excluded = set(self._store.keys_of(exclude_ids))

        def fetch(depth: int) -> list[tuple[list[Hit], bool]]:
            with self._index_lock.read():
                total = len(self._index) if allowed is None else len(allowed)
                depth = max(1, min(depth + len(excluded), len(self._index)))
                scores, keys = self._index.search(queries, depth, allowed=allowed)
            described = self._store.describe(sorted({int(key) for key in keys.flat if key >= 0}))
            rows: list[tuple[list[Hit], bool]] = []
            for row_scores, row_keys in zip(scores, keys, strict=True):
                hits: list[Hit] = []
                more = depth < total
                for score, key in zip(row_scores, row_keys, strict=True):
                    item = described.get(int(key))
                    if key < 0 or item is None or int(key) in excluded:
                        continue
                    if min_score is not None and score < min_score:
                        more = False
                        break
                    item_id, metadata, product_id = item
                    hits.append(Hit(item_id, float(score), metadata, product_id))
                rows.append((hits, more))
            return rows

        return deepen_until_k(fetch, k, group_by_product=group_by_product)

    def product_items(self, product_id: str) -> list[StoredItem]:
        items = (self._store.get(i) for i in self._store.product_ids(product_id))
        return [item for item in items if item is not None]

    def delete_product(self, product_id: str) -> list[str]:
        with self._write_lock:
            with self._store.transaction() as db:
                rows = db.execute(
                    "SELECT key, id FROM items WHERE product_id = ?", (product_id,)
                ).fetchall()
                for key, _ in rows:
                    self._store.delete_key(db, int(key))
            if rows:
                with self._index_lock:
                    self._index.remove(np.array([r[0] for r in rows], dtype=np.int64))
                self._after_write(len(rows))
        return [str(r[1]) for r in rows]

    def facets(self, key: str, limit: int) -> list[tuple[object, int]]:
        return self._store.facets(key, limit)

    def near_duplicate_pairs(self, threshold: float, neighbours: int) -> list[tuple[str, str]]:
        """Cached per catalogue version: paging through one result does not redo the pass."""
        key = (threshold, neighbours, self._store.current_seq(), self._model_id)
        cached = self._duplicates_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        pairs = self._near_duplicate_pairs(threshold, neighbours)
        self._duplicates_cache = (key, pairs)
        return pairs

    def _near_duplicate_pairs(self, threshold: float, neighbours: int) -> list[tuple[str, str]]:
        pairs: set[tuple[int, int]] = set()
        for keys, vectors in self._store.iter_embeddings(batch=2048):
            with self._index_lock.read():
                depth = min(neighbours + 1, len(self._index))
                scores, found = self._index.search(vectors, depth)
            for key, row_scores, row_keys in zip(map(int, keys), scores, found, strict=True):
                close = row_keys[(row_scores >= threshold) & (row_keys != key) & (row_keys >= 0)]
                pairs.update((min(key, o), max(key, o)) for o in map(int, close))
        ids = self._store.describe(sorted({k for pair in pairs for k in pair}))
        return [(ids[a][0], ids[b][0]) for a, b in pairs if a in ids and b in ids]

    def stats(self) -> CatalogStats:
        return CatalogStats(
            count=self._store.count(),
            embedding_dim=self._dim,
            model_id=self._model_id,
            backend="local",
            index_type=self._index.kind,
        )

    def close(self) -> None:
        self._snapshotter.shutdown(wait=True)
        try:
            if self._changes_since_snapshot or not self._snapshot_paths()[0].exists():
                self.snapshot()
        finally:
            self._store.close()
            self._lock_file.release()
