"""`train --log-neighbours N`: a neighbour grid after every epoch, to watch a run learn.

A loss curve says that something is being learnt; a grid says what: whether
the neighbours of a "7" turn from anything dark into other sevens, and which
classes still trade places. The callback draws N fixed queries and their
nearest neighbours before training (epoch 0) and after each epoch into
`<model dir>/neighbours/epoch-NNN.png`, which the report then shows as a film.

The images are held-out test images of the seen classes, chosen by the rule
the report uses, so the report's grid continues the film. They choose nothing:
early stopping reads only the validation set. Up to POOL of them are decoded
once and kept in memory, so an epoch's grid costs one small forward pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

from training.datasets import ImageSet, Splits
from training.samples import spread_queries, stratified_sample

POOL = 500
"""Held-out images the queries' neighbours are searched among."""
NEIGHBOURS = 5
FOLDER = "neighbours"


class NeighbourLog(keras.callbacks.Callback):
    """Draws `queries` and their neighbours among `images` as the encoder is now."""

    def __init__(
        self,
        encoder: keras.Model,
        images: ImageSet,
        display: np.ndarray,
        class_names: tuple[str, ...],
        queries: np.ndarray,
        folder: Path,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.images = images
        self.display = display
        self.class_names = class_names
        self.queries = queries
        self.folder = folder

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("epoch-*.png"):  # a longer earlier run's epochs
            stale.unlink()
        self.draw(0)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.draw(epoch + 1)

    def draw(self, epoch: int) -> Path:
        from training.metrics import nearest_neighbours
        from training.pipeline import embed
        from training.plots import neighbour_grid

        images = self.images
        assert images.images is not None
        embeddings = embed(self.encoder, images, image_size=images.images.shape[1:3])
        k = min(NEIGHBOURS, len(images) - 1)
        scores, ids = nearest_neighbours(embeddings, embeddings, k, exclude_self=True)
        scores, ids = scores[self.queries], ids[self.queries]
        labels = images.labels if len(self.class_names) >= 2 else None
        title = f"epoch {epoch}" if epoch else "epoch 0 (before training)"
        if labels is not None:
            right = int(np.sum(labels[ids[:, 0]] == labels[self.queries]))
            title += f": first neighbour of the query's class for {right} of {len(self.queries)}"
        path = self.folder / f"epoch-{epoch:03d}.png"
        neighbour_grid(
            self.display, labels, self.class_names, self.queries, ids, scores, path, title=title
        )
        return path


def neighbour_logs(
    encoder: keras.Model,
    splits: Splits,
    count: int,
    out_dir: Path,
    *,
    image_size: tuple[int, int],
    seed: int = 0,
) -> list[keras.callbacks.Callback]:
    """The callback for `train`, or none when there are too few held-out images to draw."""
    from training.report import display_pixels

    test = splits.test
    if count < 1 or len(test) < 2:
        return []
    pool = test.subset(stratified_sample(test.labels, POOL, seed))
    if pool.images is None:
        from training.image_folder import FileReader

        assert pool.paths is not None
        reader = FileReader(pool.paths, image_size)
        pool = ImageSet(pool.labels, images=np.stack([reader.read(i) for i in range(len(pool))]))
    queries = spread_queries(pool.labels, count, seed)
    display = display_pixels(pool, image_size)
    names = splits.train_classes
    return [NeighbourLog(encoder, pool, display, names, queries, out_dir / FOLDER)]
