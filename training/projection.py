"""Embeddings in two dimensions, by every method this machine has.

Each method answers a different question, so a report shows all it can: PCA
(linear, deterministic, honest about global distances, always there); t-SNE
(keeps each image's neighbourhood, which is what retrieval lives on; in
scikit-learn); UMAP (similar to t-SNE, keeps more global shape; only when the
optional `umap-learn` package is installed, never required).
"""

from __future__ import annotations

import numpy as np

TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
PREFERENCE = ("umap", "tsne", "pca")
"""Which projection the interactive page uses: the first one computed."""


def projections(embeddings: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """{method: [N, 2] float32 points}, PCA first; cosine distances where the method has them."""
    from sklearn.decomposition import PCA

    embeddings = np.asarray(embeddings, dtype=np.float32)
    count, dim = embeddings.shape
    components = min(2, count, dim)
    points = PCA(n_components=components, random_state=seed).fit_transform(embeddings)
    result = {"pca": _two_columns(points)}
    if count < 10:
        return result
    try:
        from sklearn.manifold import TSNE
    except ImportError:  # pragma: no cover - scikit-learn has had it since 0.17
        pass
    else:
        from threadpoolctl import threadpool_limits

        tsne = TSNE(
            n_components=2,
            perplexity=float(min(30.0, (count - 1) / 3)),
            metric="cosine",
            init="pca",
            learning_rate="auto",
            random_state=seed,
        )
        # One OpenMP thread: seconds at a report's 2,000 points, where two threads
        # spin-waiting on a shared 2-core machine took ten times longer.
        with threadpool_limits(1):
            result["tsne"] = _two_columns(tsne.fit_transform(embeddings))
    try:
        import umap
    except ImportError:
        return result
    reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed)
    result["umap"] = _two_columns(reducer.fit_transform(embeddings))
    return result


def _two_columns(points: np.ndarray) -> np.ndarray:
    """[N, 2] even when there was only one direction to project onto."""
    points = np.asarray(points, dtype=np.float32)
    if points.shape[1] < 2:
        points = np.hstack([points, np.zeros((points.shape[0], 2 - points.shape[1]), np.float32)])
    return points


def preferred(points: dict[str, np.ndarray]) -> str:
    return next(name for name in PREFERENCE if name in points)
