"""The losses the trainer can name, and the one factory that builds them.

The classes live in `pair_losses` (contrastive, triplet, N-pairs,
multi-similarity, SupCon), `proxy_losses` (ArcFace, triplet + cross-entropy)
and `xbm` (cross-batch memory); mining in `miners`. The trainer only needs
`build_loss`, `loss_callbacks` and `MetricLoss`.
"""

from __future__ import annotations

import keras

from training.metric_loss import MetricLoss, PairLoss
from training.miners import MINING_NAMES, CurriculumMiner, MiningCurriculum
from training.pair_losses import (
    ContrastiveLoss,
    MultiSimilarityLoss,
    NPairsLoss,
    SupConLoss,
    TripletLoss,
)
from training.proxy_losses import ArcFaceLoss, TripletCrossEntropyLoss
from training.xbm import CrossBatchMemory

__all__ = [
    "LOSS_NAMES",
    "MINING_NAMES",
    "ArcFaceLoss",
    "ContrastiveLoss",
    "CrossBatchMemory",
    "CurriculumMiner",
    "MetricLoss",
    "MiningCurriculum",
    "MultiSimilarityLoss",
    "NPairsLoss",
    "PairLoss",
    "SupConLoss",
    "TripletCrossEntropyLoss",
    "TripletLoss",
    "build_loss",
    "loss_callbacks",
]

LOSS_NAMES: tuple[str, ...] = (
    "contrastive",
    "triplet",
    "npairs",
    "multisimilarity",
    "supcon",
    "triplet_ce",
    "arcface",
)

_USES_MARGIN = ("contrastive", "triplet", "multisimilarity", "triplet_ce", "arcface")
_USES_TEMPERATURE = ("npairs", "supcon", "arcface")


def _given(**values: float | None) -> dict[str, float]:
    """Only the options the caller set, so every other one keeps its paper default."""
    return {key: value for key, value in values.items() if value is not None}


def _pair_loss(name: str, margin: float | None, temperature: float | None, mining: str) -> PairLoss:
    if name == "contrastive":
        return ContrastiveLoss(**_given(margin=margin))
    if name in ("triplet", "triplet_ce"):
        return TripletLoss(mining=mining, **_given(margin=margin))
    if name == "npairs":
        return NPairsLoss(**_given(temperature=temperature))
    if name == "multisimilarity":
        return MultiSimilarityLoss(**_given(epsilon=margin))
    return SupConLoss(**_given(temperature=temperature))


def build_loss(
    name: str,
    *,
    num_classes: int,
    embedding_dim: int,
    margin: float | None = None,
    temperature: float | None = None,
    mining: str = "semi-hard",
    xbm_size: int = 0,
) -> MetricLoss:
    """Build the loss layer the trainer calls as `loss(labels, embeddings)`.

    None means the paper default of that loss (see each class). A margin or
    temperature given to a loss that has none is an error rather than being
    silently ignored:

    - margin: contrastive and triplet / triplet_ce margins, multi-similarity's
      mining epsilon, ArcFace's angular margin m.
    - temperature: npairs and supcon; for ArcFace, scale s = 1 / temperature.
    - mining: "easy", "semi-hard", "hard" or "curriculum"; used by triplet and
      triplet_ce only (the curriculum needs `loss_callbacks`).
    - xbm_size: > 0 wraps the pair-based loss (for triplet_ce, its triplet
      part) in a cross-batch memory of that many embeddings; not for arcface,
      whose proxies already stand for every class.
    - num_classes, embedding_dim: size the ArcFace proxies, the triplet_ce head
      and the memory, so their variables exist before the first step.
    """
    if name not in LOSS_NAMES:
        raise ValueError(f"unknown loss {name!r}; expected one of {LOSS_NAMES}")
    if mining not in MINING_NAMES:
        raise ValueError(f"unknown mining {mining!r}; expected one of {MINING_NAMES}")
    if margin is not None and name not in _USES_MARGIN:
        raise ValueError(f"loss {name!r} has no margin; margin applies to {_USES_MARGIN}")
    if temperature is not None and name not in _USES_TEMPERATURE:
        raise ValueError(
            f"loss {name!r} has no temperature; temperature applies to {_USES_TEMPERATURE}"
        )
    if temperature is not None and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if xbm_size < 0:
        raise ValueError(f"xbm_size must be >= 0, got {xbm_size}")
    if num_classes <= 0 or embedding_dim <= 0:
        raise ValueError(
            f"num_classes and embedding_dim must be > 0, got {num_classes}, {embedding_dim}"
        )

    if name == "arcface":
        if xbm_size:
            raise ValueError("arcface compares against class proxies; xbm_size must be 0")
        scale = None if temperature is None else 1.0 / temperature
        return ArcFaceLoss(num_classes, embedding_dim, **_given(scale=scale, margin=margin))

    pair_loss = _pair_loss(name, margin, temperature, mining)
    metric: MetricLoss = (
        CrossBatchMemory(pair_loss, xbm_size, embedding_dim) if xbm_size else pair_loss
    )
    if name == "triplet_ce":
        return TripletCrossEntropyLoss(num_classes, embedding_dim, metric_loss=metric)
    return metric


def loss_callbacks(
    loss_layer: MetricLoss, curriculum_epochs: int
) -> list[keras.callbacks.Callback]:
    """Callbacks the trainer adds for this loss: the mining curriculum, if it has one.

    With `mining="curriculum"` the first `curriculum_epochs` epochs mine easy
    triplets and the rest semi-hard ones; any other loss gets no callback.
    """
    miners = loss_layer.curriculum_miners()
    return [MiningCurriculum(miners, curriculum_epochs)] if miners else []
