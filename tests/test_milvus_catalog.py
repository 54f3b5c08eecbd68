"""The Milvus backend below the API: client input never becomes expression syntax, and
filters mean exactly what they mean on the local backend (the reference, run beside it)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from app.catalog import Catalog, NewItem, open_catalog
from app.errors import InvalidField, ModelMismatch
from app.milvus_filters import metadata_expression, string_literal

DIM = 4
MODEL = "a" * 64
milvus_only = pytest.mark.parametrize("backend", ["milvus"])


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def catalog(make_settings) -> Iterator[Catalog]:
    cat = open_catalog(make_settings(), model_id=MODEL, embedding_dim=DIM)
    yield cat
    cat.close()


def ids(catalog: Catalog, query: np.ndarray, k: int = 50, **kwargs: object) -> list[str]:
    return [h.id for h in catalog.search(query[None, :], k, **kwargs)[0]]  # type: ignore[arg-type]


NASTY = ['a"b', "a'b", "back\\slash", 'x" or id != "', "line\nbreak", "tab\t", "☃ ü", "]["]


def test_quotes_and_backslashes_in_ids_round_trip(catalog: Catalog) -> None:
    catalog.upsert([NewItem(id=item, embedding=unit(i)) for i, item in enumerate(NASTY)])
    for i, item in enumerate(NASTY):
        stored = catalog.get(item)
        assert stored is not None
        assert stored.id == item
        embedding = catalog.get_embedding(item)
        assert embedding is not None
        np.testing.assert_allclose(embedding, unit(i), atol=1e-6)
    assert catalog.get('x" or id != "x') is None
    assert set(ids(catalog, unit(0), exclude_ids=NASTY[1:])) == {NASTY[0]}
    assert catalog.delete('x" or id != "')
    assert catalog.stats().count == len(NASTY) - 1
    assert not catalog.delete('x" or id != "')


def test_filter_values_and_keys_are_data_not_syntax(catalog: Catalog) -> None:
    metadata = [{"k": value, key: 1} for value, key in zip(NASTY, reversed(NASTY), strict=True)]
    catalog.upsert(
        [NewItem(id=f"i{i}", embedding=unit(i), metadata=m) for i, m in enumerate(metadata)]
    )
    for i, value in enumerate(NASTY):
        assert ids(catalog, unit(0), metadata_filter={"k": value}) == [f"i{i}"]
        assert ids(catalog, unit(0), metadata_filter={NASTY[-1 - i]: 1, "k": value}) == [f"i{i}"]
    assert ids(catalog, unit(0), metadata_filter={"k": 'a" or metadata["k"] != "'}) == []


def test_filters_compare_json_types_like_the_local_backend(catalog: Catalog) -> None:
    values: list[object] = [1, 1.0, True, "1", None, 0, False, 1.5]
    items = [
        NewItem(id=f"v{i}", embedding=unit(i), metadata={"n": v}) for i, v in enumerate(values)
    ]
    catalog.upsert([*items, NewItem(id="none", embedding=unit(99), metadata={})])
    expected: list[tuple[object, set[str]]] = [
        (1, {"v0", "v1"}),
        (1.0, {"v0", "v1"}),
        (True, {"v2"}),
        ("1", {"v3"}),
        (None, {"v4"}),
        (0, {"v5"}),
        (False, {"v6"}),
        (1.5, {"v7"}),
    ]
    for value, want in expected:
        found = set(ids(catalog, unit(0), metadata_filter={"n": value}))
        assert found == want, value
    assert ids(catalog, unit(0), metadata_filter={"n": 1, "missing": None}) == []


def test_a_filter_milvus_cannot_express_still_returns_k(catalog: Catalog) -> None:
    # Milvus Lite's JSON equality says true == 1, so `metadata["n"] == true` lets the
    # near ints through; the exact check must keep searching past them.
    query = unit(0)
    near = [NewItem(id=f"int{i}", embedding=query, metadata={"n": 1}) for i in range(60)]
    far = [NewItem(id=f"bool{i}", embedding=-query, metadata={"n": True}) for i in range(3)]
    catalog.upsert(near + far)
    assert sorted(ids(catalog, query, k=3, metadata_filter={"n": True})) == [
        "bool0",
        "bool1",
        "bool2",
    ]


def test_upsert_keeps_created_at_and_moves_updated_at(catalog: Catalog) -> None:
    first = catalog.upsert([NewItem(id="x", embedding=unit(1), metadata={"v": 1})])
    before = catalog.get("x")
    again = catalog.upsert(
        [
            NewItem(id="x", embedding=unit(2), metadata={"v": 2}),
            NewItem(id="x", embedding=unit(3), metadata={"v": 3}),
        ]
    )
    after = catalog.get("x")
    assert [o.created for o in first] == [True]
    assert [o.created for o in again] == [False, False]
    assert before is not None
    assert after is not None
    assert after.created_at == before.created_at
    assert after.updated_at >= before.updated_at
    assert after.metadata == {"v": 3}
    assert catalog.stats().count == 1


def test_min_score_and_product_grouping(catalog: Catalog) -> None:
    query = unit(0)
    catalog.upsert(
        [
            NewItem(id="p1-a", embedding=query, product_id="p1"),
            NewItem(id="p1-b", embedding=query, product_id="p1"),
            NewItem(
                id="solo", embedding=(query + unit(5) * 0.1) / np.linalg.norm(query + unit(5) * 0.1)
            ),
            NewItem(id="far", embedding=-query),
        ]
    )
    assert set(ids(catalog, query, min_score=0.5)) == {"p1-a", "p1-b", "solo"}
    grouped = catalog.search(query[None, :], 2, group_by_product=True)[0]
    assert len(grouped) == 2
    assert grouped[0].product_id == "p1"
    assert grouped[1].id == "solo"


def test_products_facets_and_near_duplicates(catalog: Catalog) -> None:
    query = unit(0)
    catalog.upsert(
        [
            NewItem(id="a1", embedding=query, product_id="A", metadata={"colour": "red", "n": 1}),
            NewItem(
                id="a2", embedding=unit(1), product_id="A", metadata={"colour": "red", "n": 1.0}
            ),
            NewItem(
                id="b1", embedding=query, product_id="B", metadata={"colour": "blue", "n": None}
            ),
            NewItem(id="c1", embedding=unit(2), metadata={"colour": "red", "n": True, "l": [1]}),
        ]
    )
    assert [i.id for i in catalog.product_items("A")] == ["a1", "a2"]
    assert catalog.facets("colour", 10) == [("red", 3), ("blue", 1)]
    size = catalog.facets("n", 10)
    assert size[0] == (1, 2)
    assert sorted(size[1:], key=str) == [(None, 1), (True, 1)]
    assert catalog.facets("l", 10) == []
    assert catalog.facets("colour", 1) == [("red", 3)]
    assert sorted(catalog.near_duplicate_pairs(0.999, 5)) == [("a1", "b1")]
    assert sorted(catalog.delete_product("A")) == ["a1", "a2"]
    assert catalog.product_items("A") == []
    assert catalog.delete_product("A") == []
    assert catalog.stats().count == 2


@milvus_only
def test_integers_milvus_json_cannot_hold_are_refused_not_crashed(catalog: Catalog) -> None:
    with pytest.raises(InvalidField, match="64 bits"):
        catalog.upsert([NewItem(id="x", embedding=unit(0), metadata={"a": [{"n": 2**70}]})])
    catalog.upsert([NewItem(id="y", embedding=unit(0), metadata={"n": 2**62})])
    assert ids(catalog, unit(0), metadata_filter={"n": 2**70}) == []
    assert ids(catalog, unit(0), metadata_filter={"n": 2**62}) == ["y"]


@milvus_only
def test_a_large_kept_copy_is_reencoded_to_fit(catalog: Catalog) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, "JPEG", quality=95, subsampling=0)
    assert len(out.getvalue()) > 65_535
    catalog.upsert([NewItem(id="big", embedding=unit(0), image=out.getvalue())])
    kept = catalog.get_image("big")
    assert kept is not None
    assert kept[:2] == b"\xff\xd8"
    assert Image.open(io.BytesIO(kept)).size[0] > 0
    stored = catalog.get("big")
    assert stored is not None
    assert stored.has_image


@milvus_only
def test_replicas_on_one_collection_see_each_others_writes(make_settings) -> None:
    one = open_catalog(make_settings(), model_id=MODEL, embedding_dim=DIM)
    two = open_catalog(make_settings(), model_id=MODEL, embedding_dim=DIM)
    try:
        one.upsert([NewItem(id="x", embedding=unit(1))])
        assert two.get("x") is not None
        assert ids(two, unit(1), k=1) == ["x"]
        assert two.delete("x")
        assert one.get("x") is None
        assert one.stats().count == 0
    finally:
        one.close()
        two.close()


@milvus_only
def test_another_model_or_dimension_is_refused(make_settings) -> None:
    cat = open_catalog(make_settings(), model_id=MODEL, embedding_dim=DIM)
    cat.upsert([NewItem(id="x", embedding=unit(1))])
    cat.close()
    with pytest.raises(ModelMismatch, match="python -m app reindex"):
        open_catalog(make_settings(), model_id="b" * 64, embedding_dim=DIM)
    with pytest.raises(ModelMismatch, match="dim 4"):
        open_catalog(make_settings(), model_id=MODEL, embedding_dim=DIM + 1)


def test_expression_literals_escape_what_the_grammar_reads() -> None:
    assert string_literal('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert metadata_expression({"k": 'x"y'}) == 'metadata["k"] == "x\\"y"'
    # Left to the exact check: nulls, huge ints, keys with brackets or quotes.
    assert metadata_expression({"k": None, "big": 2**70, "a]b": 1, 'q"': 1}) == ""
    assert metadata_expression({"b": True, "f": 1.5}) == (
        'metadata["b"] == true and metadata["f"] == 1.5'
    )
