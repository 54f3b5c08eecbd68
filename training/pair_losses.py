"""Pair-based metric losses: each is a function of query-reference cosine similarities.

All of them take a query set and a reference set (`PairLoss.compute`), so a
`CrossBatchMemory` can hand any of them extra references. Averages are over
the pairs or anchors that exist, and a batch without any (e.g. no positive
pair) gives 0, never NaN.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from training.metric_loss import (
    PairLoss,
    cosine_similarity,
    masked_logsumexp,
    masked_mean,
)
from training.miners import CurriculumMiner, Tensor, make_miner, pair_masks

_INF = float("inf")


@keras.saving.register_keras_serializable(package="lookalike")
class ContrastiveLoss(PairLoss):
    """Contrastive loss on Siamese pairs (Hadsell et al. 2006), in cosine form.

    Every positive pair of the batch is pulled together with 1 - s, every
    negative pair pushed apart with max(0, s - margin). The two terms are
    averaged separately and added, so the far more numerous negative pairs of a
    P x K batch do not drown the positives.

    Args:
        margin: cosine similarity above which a negative pair is penalised.
            Default 0.5.
    """

    def __init__(self, margin: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.margin = margin

    def compute(
        self,
        query_labels: Tensor,
        queries: Tensor,
        ref_labels: Tensor,
        refs: Tensor,
        allowed: Tensor,
    ) -> Tensor:
        s = cosine_similarity(queries, refs)
        positive, negative = pair_masks(query_labels, ref_labels, allowed)
        return masked_mean(1.0 - s, positive) + masked_mean(ops.relu(s - self.margin), negative)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="lookalike")
class TripletLoss(PairLoss):
    """Triplet margin loss, max(0, s_an - s_ap + margin), on mined triplets.

    Averaged over the triplets the miner picks, including those already
    satisfied (as `tfa.losses.TripletSemiHardLoss` does).

    Args:
        margin: required gap between positive and negative cosine
            similarity. Default 0.2.
        mining: "easy", "semi-hard", "hard" (batch-hard) or "curriculum"
            (easy, then semi-hard once a `MiningCurriculum` callback says so);
            see `training.miners.mine_triplets`. Default "semi-hard".
    """

    def __init__(self, margin: float = 0.2, mining: str = "semi-hard", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.margin = margin
        self.mining = mining
        self.miner = make_miner(mining, margin)

    def compute(
        self,
        query_labels: Tensor,
        queries: Tensor,
        ref_labels: Tensor,
        refs: Tensor,
        allowed: Tensor,
    ) -> Tensor:
        s = cosine_similarity(queries, refs)
        positive, negative = pair_masks(query_labels, ref_labels, allowed)
        triplets = self.miner(s, positive, negative)
        s_an = ops.take_along_axis(s, triplets.negative, axis=1)
        return masked_mean(ops.relu(s_an - s + self.margin), triplets.anchor_positive)

    def curriculum_miners(self) -> list[CurriculumMiner]:
        return [self.miner] if isinstance(self.miner, CurriculumMiner) else []

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin, "mining": self.mining}


@keras.saving.register_keras_serializable(package="lookalike")
class NPairsLoss(PairLoss):
    """Multi-class N-pair loss (Sohn 2016) with a temperature.

    For each anchor-positive pair, softmax cross-entropy that picks the
    positive out of {positive} + the anchor's negatives, on similarities
    divided by the temperature. For a batch of N classes x 2 with the anchors
    as queries and the positives as references this is exactly the softmax
    over the N x N anchor-positive similarity matrix; on a P x K batch every
    other-class example is a negative (NT-Xent).

    Args:
        temperature: divides the similarities; Sohn used unnormalised
            embeddings and none, unit vectors need one. Default 0.1.
    """

    def __init__(self, temperature: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = temperature

    def compute(
        self,
        query_labels: Tensor,
        queries: Tensor,
        ref_labels: Tensor,
        refs: Tensor,
        allowed: Tensor,
    ) -> Tensor:
        logits = cosine_similarity(queries, refs) / self.temperature
        positive, negative = pair_masks(query_labels, ref_labels, allowed)
        negatives = ops.expand_dims(masked_logsumexp(logits, negative), 1)
        return masked_mean(ops.softplus(negatives - logits), positive)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="lookalike")
class MultiSimilarityLoss(PairLoss):
    """Multi-similarity loss with its pair mining (Wang et al. 2019).

    A negative is kept if s + epsilon > the anchor's least similar positive;
    a positive is kept if s - epsilon < the anchor's most similar negative.
    Per anchor, (1/alpha) log(1 + sum exp(-alpha (s_p - base))) + (1/beta)
    log(1 + sum exp(beta (s_n - base))); anchors left with no positive or no
    negative contribute 0, and the sum is divided by the number of queries, as
    in the authors' code.

    Args:
        alpha: weight of positive pairs. Default 2.
        beta: weight of negative pairs. Default 50.
        base: similarity threshold lambda. Default 0.5.
        epsilon: pair-mining margin. Default 0.1.
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        epsilon: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.alpha = alpha
        self.beta = beta
        self.base = base
        self.epsilon = epsilon

    def compute(
        self,
        query_labels: Tensor,
        queries: Tensor,
        ref_labels: Tensor,
        refs: Tensor,
        allowed: Tensor,
    ) -> Tensor:
        s = cosine_similarity(queries, refs)
        positive, negative = pair_masks(query_labels, ref_labels, allowed)
        least_similar_positive = ops.min(ops.where(positive, s, _INF), axis=1, keepdims=True)
        most_similar_negative = ops.max(ops.where(negative, s, -_INF), axis=1, keepdims=True)
        mined_negative = ops.logical_and(
            negative, ops.greater(s + self.epsilon, least_similar_positive)
        )
        mined_positive = ops.logical_and(
            positive, ops.less(s - self.epsilon, most_similar_negative)
        )
        pull = masked_logsumexp(-self.alpha * (s - self.base), mined_positive, True)
        push = masked_logsumexp(self.beta * (s - self.base), mined_negative, True)
        kept = ops.logical_and(ops.any(mined_positive, axis=1), ops.any(mined_negative, axis=1))
        per_anchor = ops.where(kept, pull / self.alpha + push / self.beta, 0.0)
        return ops.sum(per_anchor) / ops.cast(ops.maximum(ops.shape(s)[0], 1), "float32")

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "base": self.base,
            "epsilon": self.epsilon,
        }


@keras.saving.register_keras_serializable(package="lookalike")
class SupConLoss(PairLoss):
    """Supervised contrastive loss (Khosla et al. 2020, L_out).

    For each anchor, the mean over its positives of
    -log(exp(s_ap / t) / sum over all other references exp(s_ak / t)),
    averaged over anchors that have a positive. Unlike `NPairsLoss`, the other
    positives also sit in each denominator.

    Args:
        temperature: divides the similarities. Default 0.1.
    """

    def __init__(self, temperature: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = temperature

    def compute(
        self,
        query_labels: Tensor,
        queries: Tensor,
        ref_labels: Tensor,
        refs: Tensor,
        allowed: Tensor,
    ) -> Tensor:
        logits = cosine_similarity(queries, refs) / self.temperature
        positive, _ = pair_masks(query_labels, ref_labels, allowed)
        log_prob = logits - ops.expand_dims(masked_logsumexp(logits, allowed), 1)
        positive_f = ops.cast(positive, "float32")
        count = ops.sum(positive_f, axis=1)
        per_anchor = -ops.sum(log_prob * positive_f, axis=1) / ops.maximum(count, 1.0)
        return masked_mean(per_anchor, ops.greater(count, 0.0))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}
