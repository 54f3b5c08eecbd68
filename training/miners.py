"""Miners: which pairs and triplets of a batch a metric loss learns from.

A miner looks at the similarities between queries and references and answers
with masks; the loss only consumes them. Keeping the choice here is what makes
"easy / semi-hard / hard" one switch, and lets a curriculum change it mid-run
without the loss knowing.

Everything is written on `keras.ops` with no data-dependent Python control
flow, so it runs inside a `tf.function` train step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, TypeAlias

import keras
from keras import ops

Tensor: TypeAlias = Any

MINING_STRATEGIES: tuple[str, ...] = ("easy", "semi-hard", "hard")
MINING_NAMES: tuple[str, ...] = (*MINING_STRATEGIES, "curriculum")

_INF = float("inf")


class PairMasks(NamedTuple):
    """Boolean [Nq, Nr] masks of the comparisons a pair-based loss may use."""

    positive: Tensor
    negative: Tensor


class Triplets(NamedTuple):
    """Triplets as masks, one negative per anchor-positive pair.

    `anchor_positive[a, p]` marks the (anchor a, positive p) pairs that form a
    triplet; `negative[a, p]` is the reference index of that triplet's negative
    and means nothing where `anchor_positive` is False. This keeps the result
    [Nq, Nr] instead of [Nq, Nr, Nr], which matters when the references include
    a cross-batch memory.
    """

    anchor_positive: Tensor
    negative: Tensor


def pair_masks(query_labels: Tensor, ref_labels: Tensor, allowed: Tensor) -> PairMasks:
    """Split the allowed comparisons into same-label and different-label pairs.

    `allowed` is where self-comparisons and empty memory slots are removed, so
    every loss and miner agrees on which references exist.
    """
    same = ops.equal(ops.expand_dims(query_labels, 1), ops.expand_dims(ref_labels, 0))
    return PairMasks(
        positive=ops.logical_and(same, allowed),
        negative=ops.logical_and(ops.logical_not(same), allowed),
    )


def _argmax_where(values: Tensor, mask: Tensor, axis: int) -> Tensor:
    return ops.cast(ops.argmax(ops.where(mask, values, -_INF), axis=axis), "int32")


def _argmin_where(values: Tensor, mask: Tensor, axis: int) -> Tensor:
    return ops.cast(ops.argmin(ops.where(mask, values, _INF), axis=axis), "int32")


def _per_pair_negative(
    similarity: Tensor, negative: Tensor, candidates: Tensor, pick_most_similar: bool
) -> Tensor:
    """The chosen negative for every anchor-positive pair, from [Nq, Nr, Nr] candidates.

    Pairs with no candidate fall back to the anchor's least similar negative,
    as TensorFlow Addons' semi-hard triplet loss does.
    """
    s_an = ops.expand_dims(similarity, 1)
    pick = _argmax_where if pick_most_similar else _argmin_where
    chosen = pick(s_an, candidates, axis=2)
    fallback = ops.expand_dims(_argmin_where(similarity, negative, axis=1), 1)
    return ops.where(ops.any(candidates, axis=2), chosen, fallback)


def mine_triplets(strategy: str, similarity: Tensor, masks: PairMasks, margin: float) -> Triplets:
    """Pick triplets by cosine similarity (higher is closer).

    - "hard" (batch-hard, Hermans et al. 2017): per anchor, its least similar
      positive and its most similar negative; one triplet per anchor.
    - "semi-hard" (Schroff et al. 2015, as `tfa.losses.TripletSemiHardLoss`):
      every anchor-positive pair, with the most similar negative that is still
      less similar than the positive; if there is none, the least similar
      negative.
    - "easy": every anchor-positive pair, with the least similar negative that
      still violates the margin (s_an > s_ap - margin). Triplets that already
      satisfy the margin have zero loss and teach nothing, so this is the
      gentlest choice that still moves the embedding; if no negative violates
      it, the least similar negative (zero loss).
    """
    positive, negative = masks
    has_negative = ops.expand_dims(ops.any(negative, axis=1), 1)
    if strategy == "hard":
        nr = ops.shape(similarity)[1]
        hardest_positive = _argmin_where(similarity, positive, axis=1)
        hardest_negative = _argmax_where(similarity, negative, axis=1)
        one_hot = ops.equal(
            ops.expand_dims(ops.arange(nr, dtype="int32"), 0),
            ops.expand_dims(hardest_positive, 1),
        )
        anchor_positive = ops.logical_and(ops.logical_and(one_hot, positive), has_negative)
        negative_index = ops.broadcast_to(
            ops.expand_dims(hardest_negative, 1), ops.shape(similarity)
        )
        return Triplets(anchor_positive, negative_index)

    s_ap = ops.expand_dims(similarity, 2)
    s_an = ops.expand_dims(similarity, 1)
    negative_3d = ops.expand_dims(negative, 1)
    if strategy == "semi-hard":
        candidates = ops.logical_and(negative_3d, ops.less(s_an, s_ap))
        negative_index = _per_pair_negative(similarity, negative, candidates, True)
    elif strategy == "easy":
        candidates = ops.logical_and(negative_3d, ops.greater(s_an, s_ap - margin))
        negative_index = _per_pair_negative(similarity, negative, candidates, False)
    else:
        raise ValueError(f"unknown mining strategy {strategy!r}; expected {MINING_STRATEGIES}")
    return Triplets(ops.logical_and(positive, has_negative), negative_index)


@keras.saving.register_keras_serializable(package="lookalike")
class TripletMiner(keras.layers.Layer):
    """A fixed triplet-mining strategy, as a layer so it nests in a loss.

    Args:
        strategy: "easy", "semi-hard" or "hard"; see `mine_triplets`.
        margin: the triplet loss margin in cosine similarity; only "easy"
            uses it, to tell which negatives still violate it.
    """

    def __init__(self, strategy: str = "semi-hard", margin: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if strategy not in MINING_STRATEGIES:
            raise ValueError(f"unknown mining strategy {strategy!r}; expected {MINING_STRATEGIES}")
        self.strategy = strategy
        self.margin = margin
        self.built = True

    def call(self, similarity: Tensor, positive: Tensor, negative: Tensor) -> Triplets:
        return mine_triplets(self.strategy, similarity, PairMasks(positive, negative), self.margin)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "strategy": self.strategy, "margin": self.margin}


@keras.saving.register_keras_serializable(package="lookalike")
class CurriculumMiner(keras.layers.Layer):
    """Mines with `first` until told to move on, then with `then`.

    Schroff et al. found that the hardest negatives early in training can
    collapse the embedding; starting gentler and tightening later avoids it.
    The stage is a non-trainable variable, so switching it (see
    `MiningCurriculum`) takes effect inside an already traced train step.

    Args:
        first: strategy while `stage` is 0. Default "easy".
        then: strategy once `stage` is 1. Default "semi-hard".
        margin: the triplet loss margin, passed to both strategies.
    """

    def __init__(
        self,
        first: str = "easy",
        then: str = "semi-hard",
        margin: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.first = TripletMiner(first, margin, name="first")
        self.then = TripletMiner(then, margin, name="then")
        self.stage = self.add_weight(
            shape=(), dtype="int32", initializer="zeros", trainable=False, name="stage"
        )
        self.built = True

    def call(self, similarity: Tensor, positive: Tensor, negative: Tensor) -> Triplets:
        early = self.first(similarity, positive, negative)
        late = self.then(similarity, positive, negative)
        switched = ops.greater(self.stage, 0)
        return Triplets(
            ops.where(switched, late.anchor_positive, early.anchor_positive),
            ops.where(switched, late.negative, early.negative),
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "first": self.first.strategy,
            "then": self.then.strategy,
            "margin": self.first.margin,
        }


def make_miner(mining: str, margin: float) -> TripletMiner | CurriculumMiner:
    """The miner named by the trainer's `mining` option (one of `MINING_NAMES`)."""
    if mining == "curriculum":
        return CurriculumMiner(margin=margin)
    return TripletMiner(mining, margin)


class MiningCurriculum(keras.callbacks.Callback):
    """Moves curriculum miners to their second strategy after `epochs` epochs.

    Epoch-based because that is what a user can reason about from the
    training curves. A custom training loop calls `on_epoch_begin` itself.

    Args:
        miners: the curriculum miners to switch (see `MetricLoss.curriculum_miners`).
        epochs: number of epochs mined with the first strategy; 0 skips it.
    """

    def __init__(self, miners: Sequence[CurriculumMiner], epochs: int) -> None:
        super().__init__()
        if epochs < 0:
            raise ValueError(f"curriculum epochs must be >= 0, got {epochs}")
        self.miners = list(miners)
        self.epochs = epochs

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        stage = 1 if epoch >= self.epochs else 0
        for miner in self.miners:
            miner.stage.assign(stage)
