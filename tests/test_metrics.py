"""Retrieval figures against hand-worked examples and a brute-force NumPy reference."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from training.metrics import (
    linear_probe_accuracy,
    nearest_neighbours,
    raw_pixel_embeddings,
    retrieval_metrics,
)


def on_circle(degrees: Sequence[float]) -> np.ndarray:
    """Unit vectors at these angles: below 180 degrees apart, nearer angle = higher cosine."""
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# Leave-one-out on one set of six points, angles and labels:
#   p0 0° A, p1 10° B, p2 25° A, p3 45° A, p4 70° B, p5 100° B     (R = 2 for every point)
# Neighbours by angular distance, and whether each shares the query's label:
#   p0: p1 p2 p3 p4 p5 -> 0 1 1 0 0   P@1 0  RP 1/2  MAP@R (0 + 1/2)/2 = 1/4
#   p1: p0 p2 p3 p4 p5 -> 0 0 0 1 1   P@1 0  RP 0    MAP@R 0
#   p2: p1 p3 p0 p4 p5 -> 0 1 1 0 0   P@1 0  RP 1/2  MAP@R (0 + 1/2)/2 = 1/4
#   p3: p2 p4 p1 p0 p5 -> 1 0 0 1 0   P@1 1  RP 1/2  MAP@R (1 + 0)/2   = 1/2
#   p4: p3 p5 p2 p1 p0 -> 0 1 0 1 0   P@1 0  RP 1/2  MAP@R (0 + 1/2)/2 = 1/4
#   p5: p4 p3 p2 p1 p0 -> 1 0 0 1 0   P@1 1  RP 1/2  MAP@R (1 + 0)/2   = 1/2
# Means: P@1 = 2/6, RP = 2.5/6 = 5/12, MAP@R = 1.75/6 = 7/24.
# recall@1 = 2/6; recall@2: all but p1 = 5/6; recall@5 (everything): 1.
SIX_ANGLES = [0, 10, 25, 45, 70, 100]
SIX_LABELS = np.array(["A", "B", "A", "A", "B", "B"])


def test_leave_one_out_matches_hand_computed_values() -> None:
    result = retrieval_metrics(on_circle(SIX_ANGLES), SIX_LABELS, ks=(1, 2, 5))

    assert result["precision_at_1"] == pytest.approx(2 / 6)
    assert result["r_precision"] == pytest.approx(5 / 12)
    assert result["map_at_r"] == pytest.approx(7 / 24)
    assert result["recall_at_1"] == pytest.approx(2 / 6)
    assert result["recall_at_2"] == pytest.approx(5 / 6)
    assert result["recall_at_5"] == pytest.approx(1.0)


def test_hand_worked_neighbour_order() -> None:
    _, ids = nearest_neighbours(
        on_circle(SIX_ANGLES), on_circle(SIX_ANGLES), 5, exclude_self=True, chunk_size=2
    )
    assert ids.tolist() == [
        [1, 2, 3, 4, 5],
        [0, 2, 3, 4, 5],
        [1, 3, 0, 4, 5],
        [2, 4, 1, 0, 5],
        [3, 5, 2, 1, 0],
        [4, 3, 2, 1, 0],
    ]


# Separate query and reference sets; R counts every same-label reference (no -1).
#   references: r0 0° A, r1 20° B, r2 40° A, r3 60° A, r4 90° B    (A: 3, B: 2)
#   q0 5° A  (R = 3): r0 r1 r2 r3 r4 -> 1 0 1 1 0   P@1 1  RP 2/3  MAP@R (1 + 0 + 2/3)/3 = 5/9
#   q1 48° B (R = 2): r2 r3 r1 r4 r0 -> 0 0 1 1 0   P@1 0  RP 0    MAP@R 0
#   q2 85° C (R = 0): no right answer, skipped.
# Means over q0, q1: P@1 1/2, RP 1/3, MAP@R 5/18; recall@2 1/2, recall@3 1.
def test_query_set_differs_from_reference_set() -> None:
    result = retrieval_metrics(
        on_circle([5, 48, 85]),
        np.array(["A", "B", "C"]),
        on_circle([0, 20, 40, 60, 90]),
        np.array(["A", "B", "A", "A", "B"]),
        ks=(1, 2, 3),
    )

    assert result["precision_at_1"] == pytest.approx(1 / 2)
    assert result["r_precision"] == pytest.approx(1 / 3)
    assert result["map_at_r"] == pytest.approx(5 / 18)
    assert result["recall_at_1"] == pytest.approx(1 / 2)
    assert result["recall_at_2"] == pytest.approx(1 / 2)
    assert result["recall_at_3"] == pytest.approx(1.0)


def test_max_r_caps_the_neighbours_r_metrics_look_at() -> None:
    result = retrieval_metrics(on_circle(SIX_ANGLES), SIX_LABELS, max_r=1)

    assert result["r_precision"] == pytest.approx(result["precision_at_1"])
    assert result["map_at_r"] == pytest.approx(result["precision_at_1"])


def brute_force_metrics(
    query: np.ndarray,
    query_labels: np.ndarray,
    reference: np.ndarray,
    reference_labels: np.ndarray,
    ks: tuple[int, ...],
    *,
    same_source: bool,
) -> dict[str, float]:
    """The definitions written out one query at a time over the full similarity matrix."""
    similarity = query.astype(np.float64) @ reference.astype(np.float64).T
    if same_source:
        np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1, kind="stable")
    sums = {"precision_at_1": 0.0, "r_precision": 0.0, "map_at_r": 0.0}
    sums.update({f"recall_at_{k}": 0.0 for k in ks})
    eligible = 0
    for q in range(query.shape[0]):
        r = int(np.sum(reference_labels == query_labels[q])) - int(same_source)
        if r == 0:
            continue
        eligible += 1
        relevant = reference_labels[order[q]] == query_labels[q]
        sums["precision_at_1"] += relevant[0]
        sums["r_precision"] += relevant[:r].sum() / r
        sums["map_at_r"] += (
            sum(relevant[:i].sum() / i for i in range(1, r + 1) if relevant[i - 1]) / r
        )
        for k in ks:
            sums[f"recall_at_{k}"] += relevant[:k].any()
    return {name: value / eligible for name, value in sums.items()}


@pytest.mark.parametrize("same_source", [True, False])
def test_chunked_metrics_equal_brute_force(same_source: bool) -> None:
    rng = np.random.default_rng(7)
    query = unit_rows(rng, 240, 8)
    query_labels = rng.integers(0, 6, size=240)
    reference, reference_labels = query, query_labels
    if not same_source:
        reference = unit_rows(rng, 180, 8)
        reference_labels = rng.integers(0, 7, size=180)
    ks = (1, 5, 10)

    expected = brute_force_metrics(
        query, query_labels, reference, reference_labels, ks, same_source=same_source
    )
    if same_source:
        got = retrieval_metrics(query, query_labels, ks=ks, chunk_size=17)
    else:
        got = retrieval_metrics(
            query, query_labels, reference, reference_labels, ks=ks, chunk_size=17
        )

    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("exclude_self", [True, False])
def test_chunked_search_equals_full_matrix(exclude_self: bool) -> None:
    rng = np.random.default_rng(3)
    data = unit_rows(rng, 300, 16)
    query = data if exclude_self else unit_rows(rng, 130, 16)
    similarity = query.astype(np.float64) @ data.astype(np.float64).T
    if exclude_self:
        np.fill_diagonal(similarity, -np.inf)
    expected_ids = np.argsort(-similarity, axis=1, kind="stable")[:, :7]

    scores, ids = nearest_neighbours(query, data, 7, exclude_self=exclude_self, chunk_size=11)

    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, np.take_along_axis(similarity, expected_ids, 1), atol=1e-5)
    unchunked = nearest_neighbours(query, data, 7, exclude_self=exclude_self, chunk_size=10_000)
    np.testing.assert_array_equal(unchunked[1], ids)


@pytest.mark.parametrize("k", [1, 2, 4, 6])
def test_self_is_excluded_among_exact_duplicates(k: int) -> None:
    rng = np.random.default_rng(0)
    duplicate = unit_rows(rng, 1, 8)
    data = np.concatenate([np.repeat(duplicate, 8, axis=0), unit_rows(rng, 12, 8)])

    scores, ids = nearest_neighbours(data, data, k, exclude_self=True)

    assert not np.any(ids == np.arange(len(data))[:, None])
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    for row in range(8):
        assert set(ids[row]) <= set(range(8)) - {row}
        np.testing.assert_allclose(scores[row], 1.0, atol=1e-5)


def test_leave_one_out_with_duplicates_is_perfect() -> None:
    rng = np.random.default_rng(1)
    centres = unit_rows(rng, 3, 16)
    data = np.repeat(centres, 4, axis=0)
    labels = np.repeat(np.arange(3), 4)

    result = retrieval_metrics(data, labels, ks=(1, 3))

    for name in ("precision_at_1", "r_precision", "map_at_r", "recall_at_1", "recall_at_3"):
        assert result[name] == pytest.approx(1.0), name


def test_nmi_of_perfect_clusters_is_one_and_of_shuffled_labels_is_low() -> None:
    rng = np.random.default_rng(2)
    centres = unit_rows(rng, 4, 32)
    labels = np.repeat(np.arange(4), 25)
    data = centres[labels] + 0.01 * rng.normal(size=(100, 32)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)

    assert retrieval_metrics(data, labels)["nmi"] == pytest.approx(1.0)
    assert retrieval_metrics(data, rng.permutation(labels))["nmi"] < 0.3


def test_queries_without_any_match_are_skipped() -> None:
    result = retrieval_metrics(on_circle([0, 5, 90]), np.array(["A", "A", "B"]), ks=(1,))

    assert result["precision_at_1"] == pytest.approx(1.0)
    assert result["map_at_r"] == pytest.approx(1.0)


def test_rejects_k_beyond_the_reference_set() -> None:
    data = on_circle([0, 10, 20])
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbours(data, data, 3, exclude_self=True)


def test_linear_probe_separates_separable_classes() -> None:
    rng = np.random.default_rng(4)
    centres = unit_rows(rng, 3, 8) * 5
    train_labels = np.repeat(np.arange(3), 20)
    test_labels = np.repeat(np.arange(3), 10)
    train = centres[train_labels] + rng.normal(size=(60, 8))
    test = centres[test_labels] + rng.normal(size=(30, 8))

    assert linear_probe_accuracy(train, train_labels, test, test_labels) == pytest.approx(1.0)
    shuffled = linear_probe_accuracy(train, rng.permutation(train_labels), test, test_labels)
    assert shuffled < 0.8


def test_raw_pixels_are_mean_centred_and_unit_length() -> None:
    images = np.array(
        [np.full((2, 2, 3), 10), np.full((2, 2, 3), 30), np.full((2, 2, 3), 20)], dtype=np.uint8
    )

    embeddings = raw_pixel_embeddings(images)

    assert embeddings.dtype == np.float32
    assert embeddings.shape == (3, 12)
    np.testing.assert_allclose(np.linalg.norm(embeddings[:2], axis=1), 1.0, atol=1e-6)
    assert float(embeddings[0] @ embeddings[1]) == pytest.approx(-1.0, abs=1e-6)
    np.testing.assert_array_equal(embeddings[2], 0.0)


def test_nmi_can_be_left_out_for_speed() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.repeat(np.arange(4), 10)
    full = retrieval_metrics(emb, labels)
    fast = retrieval_metrics(emb, labels, with_nmi=False)
    assert "nmi" in full
    assert "nmi" not in fast
    assert {k: v for k, v in full.items() if k != "nmi"} == fast
