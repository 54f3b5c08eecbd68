"""The index's stage: queries with different options, answered in one batch, each its own way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.catalog import NewItem
from app.config import Settings
from app.local_catalog import LocalCatalog
from app.pipeline import IndexStage, Query, SearchOptions

DIM = 8


def test_search_options_that_differ_never_share_an_index_call() -> None:
    assert SearchOptions(5, metadata_filter={"a": 1, "b": "x"}).key() == (
        SearchOptions(5, metadata_filter={"b": "x", "a": 1}).key()
    )
    # 1 and true are different filters (JSON types are kept apart), as are k and min_score.
    assert SearchOptions(5, metadata_filter={"n": 1}).key() != (
        SearchOptions(5, metadata_filter={"n": True}).key()
    )
    assert SearchOptions(5).key() != SearchOptions(6).key()
    assert SearchOptions(5).key() != SearchOptions(5, min_score=0.5).key()


def test_one_batch_answers_each_query_with_its_own_options(tmp_path: Path) -> None:
    vectors = np.eye(DIM, dtype=np.float32)
    settings = Settings(_env_file=None, data_dir=tmp_path, threads=1)
    catalog = LocalCatalog(settings, model_id="m", embedding_dim=DIM)
    try:
        catalog.upsert(
            [
                NewItem(id=f"i{n}", embedding=vectors[n], metadata={"odd": n % 2 == 1})
                for n in range(DIM)
            ]
        )
        stage = IndexStage(catalog)
        queries = [
            Query(vectors[2], SearchOptions(1)),
            Query(vectors[3], SearchOptions(3)),
            Query(vectors[4], SearchOptions(1)),
            Query(vectors[4], SearchOptions(2, metadata_filter={"odd": True})),
            Query(vectors[5], SearchOptions(3, min_score=0.5)),
        ]
        answers = stage(queries)
    finally:
        catalog.close()
    hits = [[h.id for h in answer] for answer in answers if isinstance(answer, list)]
    assert len(hits) == len(queries)
    assert hits[0] == ["i2"]
    assert hits[1][0] == "i3"
    assert len(hits[1]) == 3
    assert hits[2] == ["i4"]
    assert len(hits[3]) == 2
    assert all(int(h[1:]) % 2 == 1 for h in hits[3])
    assert hits[4] == ["i5"]
