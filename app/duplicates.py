"""Clusters of near-identical images: connected components over close neighbours.

The backends find the close pairs with their own k-NN search (no Python double
loop over the catalogue); this module only joins pairs into clusters.
"""

from __future__ import annotations

from collections.abc import Iterable


def clusters(pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Connected components, largest first, each sorted, ties by first id."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)
    groups: dict[str, list[str]] = {}
    for item in parent:
        groups.setdefault(find(item), []).append(item)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))
