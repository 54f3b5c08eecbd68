"""Key API and durability tests again, with the local catalogue on an HNSW index.

The tests themselves live in test_api.py and test_durability.py; this module
only re-collects a few of them with `make_settings` (and so `client`) choosing
`index_type="hnsw"`, so there is one copy of each behaviour.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.config import Settings
from tests import test_api, test_durability

SettingsFactory = Callable[..., Settings]


@pytest.fixture
def backend() -> str:
    """HNSW is an index of the local backend; Milvus has its own (LOOKALIKE_MILVUS_INDEX_TYPE)."""
    return "local"


@pytest.fixture
def make_settings(make_settings: SettingsFactory) -> SettingsFactory:
    def make(**overrides: object) -> Settings:
        return make_settings(**{"index_type": "hnsw", **overrides})

    return make


def test_stats_report_the_hnsw_index(client) -> None:
    assert client.get("/index").json()["index_type"] == "hnsw"


test_index_then_search = test_api.test_index_then_search_finds_the_same_image_first
test_upsert_replaces = test_api.test_same_id_replaces_the_item
test_delete_removes = test_api.test_unknown_ids_are_404_and_delete_removes
test_filter_fills_k = test_api.test_filter_still_returns_k_matching_results
test_more_like_this = test_api.test_more_like_this_excludes_the_item_itself
test_restart = test_durability.test_restart_keeps_the_catalogue
test_snapshot_replay = test_durability.test_snapshot_plus_replay_matches_sqlite
