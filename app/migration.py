"""Copying a local catalogue (SQLite) into a Milvus collection, resumably.

Rows are read in key order, in batches, from a read-only connection, so the
local service may keep serving meanwhile. Each batch first asks Milvus which of
its ids are already there with the same updated_at and copies only the rest:
an interrupted run resumes where it stopped, and a later run catches up on
items written since. Deletions made locally after a copy are not carried over.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.catalog import NewItem
from app.config import Settings
from app.errors import ModelMismatch, NotFound
from app.milvus_catalog import MilvusCatalog

log = logging.getLogger("lookalike.migration")

BATCH = """
SELECT i.key, i.id, i.product_id, i.metadata, i.embedding, i.created_at, i.updated_at, m.data
FROM items i LEFT JOIN images m ON m.key = i.key
WHERE i.key > ? ORDER BY i.key LIMIT ?
"""


@dataclass(frozen=True)
class MigrationResult:
    model_id: str
    total: int
    copied: int
    skipped: int


@dataclass(frozen=True)
class _Batch:
    items: list[NewItem]
    stamps: list[tuple[str, str]]


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise NotFound(f"no local catalogue at {path} (LOOKALIKE_DATA_DIR) to migrate")
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _batches(db: sqlite3.Connection, size: int) -> Iterator[_Batch]:
    last = 0
    while rows := db.execute(BATCH, (last, size)).fetchall():
        yield _Batch(
            items=[
                NewItem(
                    id=r[1],
                    product_id=r[2],
                    metadata=json.loads(r[3]),
                    embedding=np.frombuffer(r[4], dtype=np.float32),
                    image=None if r[7] is None else bytes(r[7]),
                )
                for r in rows
            ],
            stamps=[(r[5], r[6]) for r in rows],
        )
        last = int(rows[-1][0])


def _source_model(db: sqlite3.Connection, path: Path) -> tuple[str, int, int]:
    """The one model the local rows were embedded with, its dimension and the row count."""
    models = db.execute(
        "SELECT model_id, COUNT(*), MAX(LENGTH(embedding)) FROM items GROUP BY model_id"
    ).fetchall()
    if len(models) > 1:
        raise ModelMismatch(
            f"the local catalogue in {path} mixes embeddings of {len(models)} models; "
            "finish `python -m app reindex` before migrating"
        )
    if models:
        model_id, count, size = models[0]
        return str(model_id), int(size) // 4, int(count)
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    if "model_id" not in meta or "embedding_dim" not in meta:
        raise NotFound(f"the local catalogue in {path} has never been used; nothing to migrate")
    return str(meta["model_id"]), int(meta["embedding_dim"]), 0


def migrate_to_milvus(
    settings: Settings,
    *,
    batch_size: int = 256,
    on_start: Callable[[int], None] = lambda total: None,
    on_batch: Callable[[int], None] = lambda done: None,
) -> MigrationResult:
    """Copy settings' local catalogue into settings' Milvus collection.

    Refuses (ModelMismatch) when the collection holds another model's embeddings.
    """
    path = settings.database_path
    with closing(_connect(path)) as db:
        model_id, dim, total = _source_model(db, path)
        on_start(total)
        target = MilvusCatalog(settings, model_id=model_id, embedding_dim=dim)
        copied = skipped = 0
        try:
            for batch in _batches(db, batch_size):
                there = target.updated_at([i.id for i in batch.items])
                todo = [
                    n
                    for n, (item, (_, updated)) in enumerate(
                        zip(batch.items, batch.stamps, strict=True)
                    )
                    if there.get(item.id) != updated
                ]
                target.restore([batch.items[n] for n in todo], [batch.stamps[n] for n in todo])
                copied += len(todo)
                skipped += len(batch.items) - len(todo)
                on_batch(len(batch.items))
        finally:
            target.close()
    log.info("migrated %d items (%d already there) to Milvus", copied, skipped)
    return MigrationResult(model_id=model_id, total=total, copied=copied, skipped=skipped)
