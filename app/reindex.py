"""Re-embedding the local catalogue with a new model from its kept image copies.

New embeddings are written beside the live ones (table `reindex_embeddings`,
each tagged with the row's change sequence) and committed batch by batch, so
an interrupted run resumes where it stopped. The switch is one SQLite
transaction that moves every row to the new model at once: a crash before it
leaves the old catalogue complete, a crash after it the new one, never a mix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from app.bulk_embed import embed_stream
from app.catalog_store import CatalogStore
from app.encoder import Encoder
from app.errors import ReindexBlocked
from app.image_preparer import ImagePreparer
from app.model_bundle import ModelInfo

log = logging.getLogger("lookalike.reindex")

SCHEMA = """
CREATE TABLE IF NOT EXISTS reindex_embeddings (
    key       INTEGER PRIMARY KEY,
    seq       INTEGER NOT NULL,
    embedding BLOB NOT NULL
);
"""

# Rows whose fresh embedding is missing or older than the row itself.
PENDING = """
SELECT i.key, i.seq, m.data FROM items i
LEFT JOIN images m ON m.key = i.key
LEFT JOIN reindex_embeddings r ON r.key = i.key
WHERE (r.key IS NULL OR r.seq <> i.seq) AND i.key > ?
ORDER BY i.key LIMIT ?
"""


@dataclass
class ReindexProgress:
    total: int
    done: int = 0
    failed: int = 0


@dataclass(frozen=True)
class ReindexResult:
    model_id: str
    items: int
    dropped: int


class Reindexer:
    def __init__(
        self, store: CatalogStore, model: ModelInfo, encoder: Encoder, preparer: ImagePreparer
    ) -> None:
        self._store = store
        self._model = model
        self._encoder = encoder
        self._preparer = preparer
        with store.transaction() as db:
            db.execute(SCHEMA)
            if store.get_meta("reindex_model_id") != model.model_id:
                db.execute("DELETE FROM reindex_embeddings")
                store.set_meta(db, "reindex_model_id", model.model_id)

    def pending_count(self) -> int:
        return self._store.scalar(
            "SELECT COUNT(*) FROM items i LEFT JOIN reindex_embeddings r ON r.key = i.key "
            "WHERE r.key IS NULL OR r.seq <> i.seq"
        )

    def _pending(self, page: int = 512) -> Iterator[tuple[tuple[int, int], bytes | None]]:
        last = 0
        while True:
            rows = self._store.rows(PENDING, (last, page))
            if not rows:
                return
            for key, seq, data in rows:
                yield (int(key), int(seq)), (bytes(data) if data is not None else None)
            last = int(rows[-1][0])

    def embed_pending(
        self, *, batch_size: int = 64, on_progress: Callable[[int, int], None] | None = None
    ) -> list[int]:
        """Embed every row not yet done for this model; the keys with no usable copy."""
        missing: list[int] = []

        def records() -> Iterator[tuple[tuple[int, int], bytes]]:
            for token, data in self._pending():
                if data is None:
                    missing.append(token[0])
                else:
                    yield token, data

        for batch in embed_stream(
            self._encoder, records(), self._preparer.prepare_stored_copy, batch_size=batch_size
        ):
            with self._store.transaction() as db:
                db.executemany(
                    "INSERT INTO reindex_embeddings (key, seq, embedding) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET seq = excluded.seq, "
                    "embedding = excluded.embedding",
                    [
                        (key, seq, vector.astype("float32").tobytes())
                        for (key, seq), vector in zip(batch.tokens, batch.vectors, strict=True)
                    ],
                )
            missing.extend(key for (key, _), _reason in batch.failures)
            if on_progress is not None:
                on_progress(len(batch.tokens), len(batch.failures))
        return missing

    def fresh_embeddings(
        self, *, after_seq: int = 0, batch: int = 50_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(keys, new vectors) of live rows whose new embedding is up to date."""
        return self._store.vector_pages(
            "SELECT r.key, r.embedding FROM reindex_embeddings r "
            "JOIN items i ON i.key = r.key AND i.seq = r.seq "
            "WHERE i.seq > ? AND r.key > ? ORDER BY r.key LIMIT ?",
            after_seq,
            batch,
        )

    def switch(self, *, drop_missing: bool = False) -> ReindexResult:
        """Move every row to the new model in one transaction, or change nothing."""
        with self._store.transaction() as db:
            stale = [
                int(r[0])
                for r in db.execute(
                    "SELECT i.key FROM items i LEFT JOIN reindex_embeddings r ON r.key = i.key "
                    "WHERE r.key IS NULL OR r.seq <> i.seq"
                )
            ]
            if stale and not drop_missing:
                raise ReindexBlocked(
                    f"{len(stale)} items have no usable kept image copy to re-embed; re-upload "
                    "them, or pass --drop-missing to delete them in the switch"
                )
            for key in stale:
                self._store.delete_key(db, key)
            db.execute(
                "UPDATE items SET embedding = (SELECT r.embedding FROM reindex_embeddings r "
                "WHERE r.key = items.key), model_id = ?",
                (self._model.model_id,),
            )
            self._store.set_meta(db, "model_id", self._model.model_id)
            self._store.set_meta(db, "embedding_dim", str(self._model.embedding_dim))
            self._store.set_meta(db, "model_dir", str(self._model.path))
            db.execute("DELETE FROM reindex_embeddings")
            db.execute("DELETE FROM meta WHERE key = 'reindex_model_id'")
            count = int(db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
        return ReindexResult(model_id=self._model.model_id, items=count, dropped=len(stale))
