"""Every vector index through the same tests: what goes in comes out, and nothing else."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from app.hnsw_index import EXACT_SCAN_BELOW, HnswIndex
from app.vector_index import FlatIndex, VectorIndex

DIM = 16

IndexFactory = Callable[[], VectorIndex]

FACTORIES: dict[str, IndexFactory] = {
    "flat": lambda: FlatIndex(DIM),
    "hnsw": lambda: HnswIndex(DIM, m=16, ef_construction=64, ef_search=64, rebuild_min=10),
    "hnsw-sync": lambda: HnswIndex(
        DIM, m=16, ef_construction=64, ef_search=64, rebuild_min=10, background_rebuild=False
    ),
}


@pytest.fixture(params=sorted(FACTORIES))
def make_index(request: pytest.FixtureRequest) -> IndexFactory:
    return FACTORIES[request.param]


def clustered(n: int, dim: int = DIM, *, clusters: int = 20, seed: int = 0) -> np.ndarray:
    """Unit vectors like real embeddings: clusters whose spread decays over a few directions.

    Isotropic noise in every dimension is far harder for a graph index than
    embeddings are, and would test the data, not the index.
    """
    layout = np.random.default_rng(1000 + dim + clusters)
    centres = layout.normal(size=(clusters, dim))
    rotation = np.linalg.qr(layout.normal(size=(dim, dim)))[0]
    spread = np.arange(1, dim + 1) ** -0.5
    spread *= 0.7 * np.sqrt(dim) / np.linalg.norm(spread)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)] + (rng.normal(size=(n, dim)) * spread) @ rotation
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def keys(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def top(index: VectorIndex, query: np.ndarray, k: int, **kw: object) -> list[int]:
    _, found = index.search(query[None, :], k, **kw)  # type: ignore[arg-type]
    return [int(x) for x in found[0] if x >= 0]


def test_add_then_search_finds_each_vector_first(make_index: IndexFactory) -> None:
    index = make_index()
    vectors = clustered(300)
    index.add(np.arange(1000, 1300), vectors)
    assert len(index) == 300
    scores, found = index.search(vectors[:50], 5)
    assert found.shape == (50, 5)
    assert found[:, 0].tolist() == list(range(1000, 1050))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_short_results_are_padded_with_minus_one(make_index: IndexFactory) -> None:
    index = make_index()
    _, empty = index.search(clustered(2), 3)
    assert (empty == -1).all()
    index.add(keys(7, 8), clustered(2))
    _, found = index.search(clustered(1, seed=5), 4)
    assert sorted(found[0, :2].tolist()) == [7, 8]
    assert found[0, 2:].tolist() == [-1, -1]


def test_replace_forgets_the_old_vector(make_index: IndexFactory) -> None:
    index = make_index()
    vectors = clustered(200)
    index.add(np.arange(200), vectors)
    fresh = clustered(10, seed=9)
    index.replace(np.arange(10), fresh)
    assert len(index) == 200
    for i in range(10):
        scores, found = index.search(fresh[i][None, :], 1)
        assert found[0, 0] == i
        assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
        # The old vector's own slot must not answer for key i any more.
        old_scores, old_found = index.search(vectors[i][None, :], 200)
        hit = dict(zip(old_found[0].tolist(), old_scores[0].tolist(), strict=True))
        assert hit[i] == pytest.approx(float(vectors[i] @ fresh[i]), abs=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "hnsw-sync"])
def test_hnsw_add_of_a_present_or_repeated_key_keeps_the_last(kind: str) -> None:
    """HNSW cannot overwrite in place, so its add() retires the old label itself.

    (FlatIndex.add expects new keys: the catalogue always goes through replace().)
    """
    index = FACTORIES[kind]()
    a, b, c = clustered(3, seed=3)
    index.add(keys(1, 1), np.stack([a, b]))
    index.add(keys(1), c[None, :])
    assert len(index) == 1
    scores, found = index.search(np.stack([a, b, c]), 3)
    assert found[:, 0].tolist() == [1, 1, 1]
    assert (found[:, 1:] == -1).all()
    assert scores[2, 0] == pytest.approx(1.0, abs=1e-5)


def test_remove_is_never_returned_and_unknown_keys_are_ignored(make_index: IndexFactory) -> None:
    index = make_index()
    vectors = clustered(100)
    index.add(np.arange(100), vectors)
    index.remove(keys(3, 4, 5, 12345))
    index.remove(keys())
    assert len(index) == 97
    _, found = index.search(vectors, 100)
    assert not {3, 4, 5} & set(found.reshape(-1).tolist())
    assert (found >= 0).sum(axis=1).tolist() == [97] * 100


@pytest.mark.parametrize("n_allowed", [0, 3, 40, EXACT_SCAN_BELOW + 500])
def test_allowed_restricts_and_still_fills_k(make_index: IndexFactory, n_allowed: int) -> None:
    index = make_index()
    n = EXACT_SCAN_BELOW + 2000
    vectors = clustered(n, seed=4)
    index.add(np.arange(n), vectors)
    index.remove(np.arange(0, 200, 2))
    rng = np.random.default_rng(1)
    allowed = rng.choice(np.arange(n), size=n_allowed, replace=False)
    live_allowed = {int(x) for x in allowed if not (x < 200 and x % 2 == 0)}
    k = 10
    scores, found = index.search(vectors[:20], k, allowed=allowed)
    for row_scores, row in zip(scores, found, strict=True):
        got = [int(x) for x in row if x >= 0]
        assert set(got) <= live_allowed
        assert len(got) == min(k, len(live_allowed))
        assert len(set(got)) == len(got)
        assert np.all(np.diff(row_scores[: len(got)]) <= 1e-6)
    if live_allowed:
        inside = sorted(live_allowed)[0]
        assert top(index, vectors[inside], 1, allowed=allowed) == [inside]


def test_snapshot_round_trips_exactly(make_index: IndexFactory, tmp_path: Path) -> None:
    index = make_index()
    vectors = clustered(500, seed=6)
    index.add(np.arange(500), vectors)
    index.replace(np.arange(0, 100, 3), clustered(34, seed=7))
    index.remove(np.arange(400, 450))
    path = tmp_path / "index.bin"
    path.write_bytes(index.serialize())
    loaded = make_index()
    loaded.load(path)
    assert len(loaded) == len(index) == 450
    queries = clustered(30, seed=8)
    for allowed in (None, np.arange(0, 500, 7)):
        before = index.search(queries, 10, allowed=allowed)
        after = loaded.search(queries, 10, allowed=allowed)
        np.testing.assert_array_equal(before[1], after[1])
        np.testing.assert_array_equal(before[0], after[0])
    if isinstance(index, HnswIndex):
        assert isinstance(loaded, HnswIndex)
        assert loaded.tombstones == index.tombstones
    # The label bookkeeping came back too: later writes behave as on the original.
    for ix in (index, loaded):
        ix.remove(keys(1, 2))
        ix.replace(keys(5), vectors[300][None, :])
    np.testing.assert_array_equal(index.search(queries, 10)[1], loaded.search(queries, 10)[1])
    assert loaded.serialize() == index.serialize()


def test_a_snapshot_of_another_shape_is_refused(make_index: IndexFactory, tmp_path: Path) -> None:
    index = make_index()
    path = tmp_path / "index.bin"
    if isinstance(index, HnswIndex):
        path.write_bytes(HnswIndex(DIM + 1).serialize())
        with pytest.raises(ValueError, match="dimension"):
            index.load(path)
        path.write_bytes(HnswIndex(DIM, m=8).serialize())
        with pytest.raises(ValueError, match="M=8"):
            index.load(path)
        path.write_bytes(FlatIndex(DIM).serialize())
        with pytest.raises(ValueError, match="not an HNSW"):
            index.load(path)
    else:
        path.write_bytes(FlatIndex(DIM + 1).serialize())
        with pytest.raises(ValueError, match="dimension"):
            index.load(path)


def test_a_graph_built_with_a_smaller_ef_construction_is_refused(tmp_path: Path) -> None:
    """A worse-linked graph would serve lower recall at the configured efSearch."""
    vectors = clustered(300, seed=30)
    path = tmp_path / "index.bin"
    older = HnswIndex(DIM, m=16, ef_construction=32)
    older.add(np.arange(300), vectors)
    path.write_bytes(older.serialize())
    with pytest.raises(ValueError, match="efConstruction 32, below the configured 64"):
        HnswIndex(DIM, m=16, ef_construction=64).load(path)
    # A better-linked graph is kept; the nodes added to it from now on are
    # linked with the configured value, which its next snapshot records.
    lighter = HnswIndex(DIM, m=16, ef_construction=16)
    lighter.load(path)
    assert lighter._graph.hnsw.efConstruction == 16
    np.testing.assert_array_equal(
        lighter.search(vectors[:20], 5)[1], older.search(vectors[:20], 5)[1]
    )


def test_a_truncated_snapshot_is_refused(make_index: IndexFactory, tmp_path: Path) -> None:
    index = make_index()
    index.add(np.arange(50), clustered(50))
    data = index.serialize()
    path = tmp_path / "index.bin"
    for cut in (10, len(data) // 3, len(data) - 5):
        path.write_bytes(data[:cut])
        with pytest.raises((ValueError, RuntimeError)):
            make_index().load(path)


def test_many_deletes_and_replaces_never_return_stale_keys(make_index: IndexFactory) -> None:
    index = make_index()
    n = 2000
    current = clustered(n, seed=10)
    index.add(np.arange(n), current)
    live = set(range(n))
    rng = np.random.default_rng(2)
    for round_ in range(8):
        gone = rng.choice(sorted(live), size=150, replace=False)
        index.remove(gone)
        live -= set(gone.tolist())
        changed = rng.choice(sorted(live), size=50, replace=False)
        current[changed] = clustered(50, seed=100 + round_)
        index.replace(changed, current[changed])
        probe = rng.choice(n, size=40, replace=False)
        scores, found = index.search(current[probe], 10)
        for row_scores, row in zip(scores, found, strict=True):
            assert set(row.tolist()) <= live
            assert np.all(np.diff(row_scores) <= 1e-6)
        # Every score is that of the key's current vector: no stale node answers for it.
        for q, row_scores, row in zip(current[probe], scores, found, strict=True):
            np.testing.assert_allclose(row_scores, current[row] @ q, atol=1e-5)
        assert len(index) == len(live)
    if isinstance(index, HnswIndex):
        index.wait_for_rebuild()
        assert index.rebuilds >= 1
        index.rebuild()
        assert index.tombstones == 0
        scores, found = index.search(current[sorted(live)[:50]], 1)
        assert found[:, 0].tolist() == sorted(live)[:50]


def test_writes_during_a_background_rebuild_are_kept() -> None:
    index = HnswIndex(DIM, m=16, ef_construction=64, rebuild_min=10, background_rebuild=True)
    vectors = clustered(3000, seed=11)
    index.add(np.arange(3000), vectors)
    gate = threading.Event()
    build_graph = index._new_graph
    index._new_graph = lambda: gate.wait(30) and build_graph()  # type: ignore[method-assign]
    index.remove(np.arange(1000))
    assert index.rebuilds == 0
    index.remove(keys(1500))
    index.replace(keys(2000), vectors[2500][None, :])
    index.add(keys(9000), vectors[10][None, :])
    assert not set(top(index, vectors[5], 100)) & set(range(1000))
    gate.set()
    index.wait_for_rebuild()
    assert index.tombstones == 2  # the journalled remove and replace, replayed on the new graph
    assert index.rebuilds == 1
    assert len(index) == 2000
    assert top(index, vectors[10], 1) == [9000]
    assert 1500 not in top(index, vectors[1500], 50)
    assert sorted(top(index, vectors[2500], 2)) == [2000, 2500]
    assert not set(top(index, vectors[5], 100)) & set(range(1000))


def test_hnsw_recall_at_10_against_exact_on_clustered_data() -> None:
    vectors = clustered(20_000, 64, clusters=100, seed=12)
    queries = clustered(200, 64, clusters=100, seed=13)
    flat = FlatIndex(64)
    hnsw = HnswIndex(64, m=32, ef_construction=80, ef_search=128)
    for index in (flat, hnsw):
        index.add(np.arange(len(vectors)), vectors)
    _, exact = flat.search(queries, 10)
    _, approx = hnsw.search(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95


def test_hnsw_finds_each_key_whether_added_before_or_after_its_last_sort() -> None:
    """Keys live in sorted arrays plus a dict of recent additions; both must answer.

    The adds below cross the re-sort point (4096 recent keys) once, so keys
    sit on both sides of it when they are removed, replaced, re-added and
    filtered on.
    """
    index = HnswIndex(
        DIM, m=8, ef_construction=32, ef_search=64, rebuild_min=10**6, background_rebuild=False
    )
    vectors = clustered(7000, seed=20)
    current: dict[int, np.ndarray] = {}

    def add(new: np.ndarray, rows: np.ndarray) -> None:
        index.add(new, vectors[rows])
        current.update(zip(new.tolist(), vectors[rows], strict=True))

    add(np.arange(0, 3000) * 3, np.arange(0, 3000))  # recent
    add(np.arange(3000, 5000) * 3, np.arange(3000, 5000))  # passes 4096: all sorted
    add(np.arange(5000, 5200) * 3, np.arange(5000, 5200))  # recent again
    gone = np.array([0, 3, 2997 * 3, 5100 * 3, 5199 * 3, 10**9], dtype=np.int64)
    index.remove(gone)
    for key in gone.tolist():
        current.pop(key, None)
    index.remove(gone)  # already gone: nothing happens
    # Replace old and recent keys, bring back a removed one, repeat one in a batch.
    add(np.array([6, 4000 * 3, 5150 * 3, 3, 9, 9], dtype=np.int64), np.arange(6000, 6006))
    assert len(index) == len(current) == 5196
    assert index.tombstones == 5 + 4 + 1  # removed; replaced (6, 12000, 15450, 9); 9 repeated

    live = np.array(sorted(current), dtype=np.int64)
    probe = np.concatenate([live[:: len(live) // 97], gone])
    for key in probe.tolist():
        query = current.get(key, vectors[0])
        _, found = index.search(query[None, :], 1, allowed=np.array([key]))
        assert found[0, 0] == (key if key in current else -1)
    scores, found = index.search(vectors[6000:6006], 5, allowed=probe)
    allowed_live = set(probe.tolist()) & set(current)
    for q, row_scores, row in zip(vectors[6000:6006], scores, found, strict=True):
        assert set(row[row >= 0].tolist()) <= allowed_live
        np.testing.assert_allclose(row_scores, [float(current[int(k)] @ q) for k in row], atol=1e-5)
    _, found = index.search(np.stack([current[k] for k in live[:200].tolist()]), 1)
    assert (found[:, 0] == live[:200]).mean() > 0.95
