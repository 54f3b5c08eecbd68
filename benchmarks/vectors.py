"""Benchmark vectors shaped like trained embeddings, not isotropic noise.

Metric-learning embeddings of a catalogue sit in clusters (classes, products)
of uneven size, and within a cluster they vary along a few directions much more
than along the rest. Isotropic Gaussian noise in all 128 dimensions has neither
property and is much harder for graph and cluster indexes than real data, so
figures measured on it would describe the data, not the index.

Here: Zipf-sized clusters (one per 500 vectors on average), each with its own
spread, and within-cluster variation whose variance decays as 1/i over a random
orthonormal basis (participation ratio about 18 of 128 dimensions, 13 of 64);
unit-normalised. A vector's nearest neighbour then scores about 0.85 and a
random pair about 0.0, as with a trained encoder.
"""

from __future__ import annotations

import numpy as np

VECTORS_PER_CLUSTER = 500


def clustered_unit_vectors(
    n: int, dim: int, *, queries: int = 0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(n database vectors, `queries` held-out vectors from the same clusters), float32."""
    rng = np.random.default_rng(seed)
    clusters = max(1, n // VECTORS_PER_CLUSTER)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.8
    weights /= weights.sum()
    spread = rng.uniform(0.6, 1.2, clusters).astype(np.float32)
    rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    scale = np.arange(1, dim + 1, dtype=np.float32) ** -0.5
    scale *= 0.7 * np.sqrt(dim) / np.linalg.norm(scale)
    total = n + queries
    out = np.empty((total, dim), dtype=np.float32)
    for start in range(0, total, 100_000):
        count = min(100_000, total - start)
        label = rng.choice(clusters, count, p=weights)
        noise = rng.standard_normal((count, dim), dtype=np.float32) * scale
        x = centres[label] + spread[label, None] * (noise @ rotation)
        out[start : start + count] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out[:n], out[n:]
