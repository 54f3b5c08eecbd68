"""Thresholds against hand-worked F1 values, separable data and a per-threshold loop."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from training import calibration
from training.calibration import (
    Calibration,
    calibrate_duplicate_threshold,
    calibrate_threshold,
    threshold_curve,
)


def on_circle(degrees: Sequence[float]) -> np.ndarray:
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# Scores 0.9 0.8 0.7 0.6 0.5 for pairs same? 1 1 0 1 0 (3 positives). Matching at >= t:
#   t 0.9: TP 1 of 1 predicted  P 1    R 1/3  F1 2*1/(1+3) = 1/2
#   t 0.8: TP 2 of 2            P 1    R 2/3  F1 4/(2+3)   = 4/5
#   t 0.7: TP 2 of 3            P 2/3  R 2/3  F1 4/(3+3)   = 2/3
#   t 0.6: TP 3 of 4            P 3/4  R 1    F1 6/(4+3)   = 6/7   <- best
#   t 0.5: TP 3 of 5            P 3/5  R 1    F1 6/(5+3)   = 3/4
def test_curve_matches_hand_computed_values() -> None:
    curve = threshold_curve(np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.array([1, 1, 0, 1, 0]))

    np.testing.assert_allclose(curve["thresholds"], [0.5, 0.6, 0.7, 0.8, 0.9])
    np.testing.assert_allclose(curve["precision"], [3 / 5, 3 / 4, 2 / 3, 1, 1])
    np.testing.assert_allclose(curve["recall"], [1, 1, 2 / 3, 2 / 3, 1 / 3])
    np.testing.assert_allclose(curve["f1"], [3 / 4, 6 / 7, 2 / 3, 4 / 5, 1 / 2])


def test_tied_scores_form_one_operating_point() -> None:
    curve = threshold_curve(np.array([0.8, 0.8, 0.5]), np.array([True, False, False]))

    np.testing.assert_allclose(curve["thresholds"], [0.5, 0.8])
    np.testing.assert_allclose(curve["precision"], [1 / 3, 1 / 2])
    np.testing.assert_allclose(curve["recall"], [1, 1])


def test_curve_equals_a_loop_over_thresholds_and_recall_is_monotonic() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.uniform(-1, 1, size=400), 2)
    same = rng.random(400) < scores / 2 + 0.5

    curve = threshold_curve(scores, same)

    assert np.all(np.diff(curve["thresholds"]) > 0)
    assert np.all(np.diff(curve["recall"]) <= 0)
    for t, precision, recall, f1 in zip(
        curve["thresholds"], curve["precision"], curve["recall"], curve["f1"], strict=True
    ):
        predicted = scores >= t
        tp = np.sum(predicted & same)
        assert precision == pytest.approx(tp / predicted.sum())
        assert recall == pytest.approx(tp / same.sum())
        assert f1 == pytest.approx(2 * precision * recall / (precision + recall))


# Four points, labels A A A B: 3 positive and 3 negative pairs, so every pair is used.
# Angles A 0°, 20°, 50° and B 72°; pairs by angle apart (nearer = higher cosine):
#   20 P (0,20)   22 N (50,72)   30 P (20,50)   50 P (0,50)   52 N (20,72)   72 N (0,72)
# Best F1 matches the first four: TP 3 of 4 predicted, P 3/4, R 1, F1 6/7, and the
# threshold sits midway between cos 50° and cos 52°.
def test_calibrate_threshold_matches_hand_computed_f1() -> None:
    result = calibrate_threshold(on_circle([0, 20, 50, 72]), np.array(["A", "A", "A", "B"]))

    expected = (np.cos(np.deg2rad(50)) + np.cos(np.deg2rad(52))) / 2
    assert result.threshold == pytest.approx(expected, abs=1e-5)
    assert result.precision == pytest.approx(3 / 4)
    assert result.recall == pytest.approx(1.0)
    assert result.f1 == pytest.approx(6 / 7)
    assert result.pairs == 6


def separable_classes(rng: np.random.Generator, classes: int, per_class: int, spread: float):
    centres = unit_rows(rng.normal(size=(classes, 32)))
    labels = np.repeat(np.arange(classes), per_class)
    data = unit_rows(centres[labels] + spread * rng.normal(size=(labels.size, 32)))
    return data, labels


def test_separable_classes_give_a_threshold_between_them() -> None:
    rng = np.random.default_rng(1)
    data, labels = separable_classes(rng, classes=5, per_class=12, spread=0.02)
    similarity = data.astype(np.float64) @ data.astype(np.float64).T
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), k=1)

    result = calibrate_threshold(data, labels)

    assert result.f1 == 1.0
    assert result.precision == 1.0
    assert result.recall == 1.0
    assert similarity[upper & ~same].max() < result.threshold < similarity[upper & same].min()
    assert result.pairs == 2 * 5 * (12 * 11 // 2)


def test_pairs_are_balanced_and_capped() -> None:
    rng = np.random.default_rng(2)
    data, labels = separable_classes(rng, classes=4, per_class=30, spread=0.5)

    result = calibrate_threshold(data, labels, max_pairs=500)

    assert isinstance(result, Calibration)
    assert result.pairs == 500
    assert calibrate_threshold(data, labels, max_pairs=500) == result


def test_needs_both_kinds_of_pair() -> None:
    with pytest.raises(ValueError, match="two classes"):
        calibrate_threshold(on_circle([0, 10, 20]), np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="two classes"):
        calibrate_threshold(on_circle([0, 10, 20]), np.array([1, 2, 3]))


@pytest.mark.parametrize("same_class", [True, False])
def test_pair_sampler_reaches_exactly_the_right_pairs(
    monkeypatch: pytest.MonkeyPatch, same_class: bool
) -> None:
    labels = np.array([3, 1, 3, 2, 3, 1, 2, 2, 3, 3])
    i, j = np.triu_indices(labels.size, k=1)
    keep = (labels[i] == labels[j]) == same_class
    everything = set(zip(i[keep].tolist(), j[keep].tolist(), strict=True))
    monkeypatch.setattr(calibration, "_ENUMERATE_LIMIT", 0)

    got_i, got_j = calibration._class_pairs(
        labels, len(everything), same_class=same_class, rng=np.random.default_rng(0)
    )

    assert set(zip(got_i.tolist(), got_j.tolist(), strict=True)) == everything
    assert got_i.size == len(everything)


def test_large_sets_are_sampled_with_distinct_pairs_of_the_right_kind() -> None:
    labels = np.repeat([0, 1], 1500)
    for same_class in (True, False):
        i, j = calibration._class_pairs(
            labels, 5000, same_class=same_class, rng=np.random.default_rng(0)
        )
        assert i.size == 5000
        assert np.all(i < j)
        assert np.unique(i * labels.size + j).size == 5000
        assert np.all((labels[i] == labels[j]) == same_class)


def test_duplicate_threshold_separates_copies_from_same_class_images() -> None:
    rng = np.random.default_rng(3)
    data, labels = separable_classes(rng, classes=3, per_class=20, spread=0.3)
    augmented = unit_rows(data + 0.02 * rng.normal(size=data.shape))
    copies = np.einsum("nd,nd->n", data.astype(np.float64), augmented.astype(np.float64))
    others = data.astype(np.float64) @ augmented.astype(np.float64).T
    np.fill_diagonal(others, -np.inf)

    duplicate = calibrate_duplicate_threshold(data, augmented)

    assert duplicate.f1 == 1.0
    assert others.max() < duplicate.threshold < copies.min()
    assert duplicate.pairs == 2 * 60
    assert duplicate.threshold > calibrate_threshold(data, labels).threshold


def test_duplicate_threshold_hand_computed() -> None:
    # Originals at 0° and 90°, copies at 10° and 100°. Positives (copy of itself) are
    # 10° apart; the two negatives (0°, 100°) and (90°, 10°) are 100° and 80° apart.
    # Perfect split at the midpoint of cos 10° and cos 80°.
    result = calibrate_duplicate_threshold(on_circle([0, 90]), on_circle([10, 100]))

    expected = (np.cos(np.deg2rad(10)) + np.cos(np.deg2rad(80))) / 2
    assert result.threshold == pytest.approx(expected, abs=1e-5)
    assert (result.precision, result.recall, result.f1) == (1.0, 1.0, 1.0)
    assert result.pairs == 4
