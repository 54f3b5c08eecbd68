"""Approximate search over an HNSW graph, for catalogues too large to scan on every query.

FAISS's `IndexHNSWFlat` numbers vectors 0, 1, 2, ... in insertion order and can
never remove one, because other nodes' edges run through it. So this index keeps
its own labels: `_keys[label]` is the catalogue key a graph node stands for (-1
for none). Removing or replacing a key only turns its old node into a tombstone
(`_keys[label] = -1` and its bit in the live bitmap cleared); tombstones still
route searches through the graph but a FAISS `IDSelectorBitmap` keeps them out
of the results.

Finding a key's node goes the other way. A dict of a million Python ints cost
~100 MB, so the reverse map is numpy arrays: the live nodes ordered by key
(`_by_key`) and their keys (`_sorted_keys`) for `searchsorted`, plus a small dict
of keys added since those were last sorted (`_recent`), re-sorted into them
once it holds a sixteenth of the nodes. A sorted entry counts only while
`_keys` still gives its node that key, so a removal needs no work there.

Once tombstones reach `rebuild_fraction` of the nodes (default 20%, and at
least `rebuild_min` of them), a fresh graph is built from the live vectors,
read back from the graph's own flat storage. That takes minutes at a million
vectors, so by default it happens on a background thread, with half the cores,
while this graph keeps answering on the rest; writes made meanwhile are
journalled and replayed onto the new graph when the next write swaps it in.

Metadata filters (`allowed`) become a bitmap of the allowed live nodes. A
filter that leaves few nodes is answered by an exact scan of just those
vectors, and any query for which the graph walk finds fewer results than exist
(a selective filter can strand it) is answered exactly too, so a filter still
yields k results when k match.

Callers serialise mutations against everything else (the catalogue's
readers-writer lock); concurrent searches are safe.
"""

from __future__ import annotations

import json
import struct
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.vector_index import VectorIndex, _as_keys, _as_vectors, _empty, faiss

SNAPSHOT_MAGIC = b"LOOKALIKE-HNSW\n"
SNAPSHOT_VERSION = 1

# Below this many candidate nodes a filtered query is scanned exactly: cheaper
# than a graph walk that has to skip almost every node it visits.
EXACT_SCAN_BELOW = 4096

# Keys added since the last sort stay in a dict until there are this many, or
# a sixteenth of the nodes: re-sorting costs ~10-50 ms at 1M nodes (the keys
# arrive nearly in order), so it happens at most once per 60k or so writes.
RECENT_AT_LEAST = 4096


@dataclass
class _Rebuild:
    """A graph being built off-thread, and the writes it will have to catch up on."""

    result: Future[tuple[Any, np.ndarray]]
    journal: list[tuple[np.ndarray, np.ndarray | None]] = field(default_factory=list)


class HnswIndex(VectorIndex):
    """HNSW (inner product) with tombstones for removals and a rebuild policy."""

    kind = "hnsw"

    def __init__(
        self,
        dim: int,
        *,
        threads: int = 0,
        m: int = 32,
        ef_construction: int = 160,
        ef_search: int = 64,
        rebuild_fraction: float = 0.2,
        rebuild_min: int = 1000,
        background_rebuild: bool = True,
    ) -> None:
        super().__init__(dim, threads=threads)
        if not 0 < rebuild_fraction < 1:
            raise ValueError(f"rebuild_fraction must be in (0, 1), got {rebuild_fraction}")
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.rebuild_fraction = rebuild_fraction
        self.rebuild_min = max(1, rebuild_min)
        self.background_rebuild = background_rebuild
        self.rebuilds = 0
        self._rebuild: _Rebuild | None = None
        self._reset(self._new_graph(), np.empty(0, dtype=np.int64))

    # state ------------------------------------------------------------------

    def _new_graph(self) -> Any:
        graph = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = self.ef_construction
        graph.hnsw.efSearch = self.ef_search
        return graph

    def _reset(self, graph: Any, keys: np.ndarray) -> None:
        """Adopt a graph whose node i holds keys[i] (-1: a tombstone)."""
        n = len(keys)
        self._graph: Any = graph
        self._keys = np.full(max(16, n), -1, dtype=np.int64)
        self._keys[:n] = keys
        alive = keys >= 0
        self._live_bits = np.packbits(
            np.concatenate([alive, np.zeros(len(self._keys) - n, dtype=bool)]), bitorder="little"
        )
        self._tombstones = n - int(alive.sum())
        self._sort_keys()

    @property
    def _nodes(self) -> int:
        return int(self._graph.ntotal)

    @property
    def tombstones(self) -> int:
        return self._tombstones

    def __len__(self) -> int:
        return self._nodes - self._tombstones

    def _sort_keys(self) -> None:
        """Rebuild the key-ordered arrays from `_keys` and empty `_recent`."""
        live = np.flatnonzero(self._keys[: self._nodes] >= 0)
        # Stable sort: keys mostly arrive in increasing order, which it finds in one pass.
        self._by_key = live[np.argsort(self._keys[live], kind="stable")]
        self._sorted_keys = self._keys[self._by_key]
        self._recent: dict[int, int] = {}

    def _labels_of(self, keys: np.ndarray) -> np.ndarray:
        """The node holding each key, or -1 where the index does not hold it."""
        labels = np.full(len(keys), -1, dtype=np.int64)
        if len(self._sorted_keys) and len(keys):
            at = np.minimum(np.searchsorted(self._sorted_keys, keys), len(self._sorted_keys) - 1)
            candidates = self._by_key[at]
            # A sorted entry whose node was since retired no longer holds the key.
            held = (self._sorted_keys[at] == keys) & (self._keys[candidates] == keys)
            labels[held] = candidates[held]
        recent = self._recent
        if len(recent) > len(keys):  # a write's few keys: look each one up
            for i, key in enumerate(keys.tolist()):
                labels[i] = recent.get(key, labels[i])
        elif recent:  # a filter's many keys: sort the few recent ones and search those
            recent_keys = np.fromiter(recent.keys(), dtype=np.int64, count=len(recent))
            recent_labels = np.fromiter(recent.values(), dtype=np.int64, count=len(recent))
            order = np.argsort(recent_keys)
            recent_keys, recent_labels = recent_keys[order], recent_labels[order]
            at = np.minimum(np.searchsorted(recent_keys, keys), len(recent_keys) - 1)
            held = recent_keys[at] == keys
            labels[held] = recent_labels[at][held]
        return labels

    def _remember(self, keys: np.ndarray, labels: np.ndarray) -> None:
        """Record that these (distinct) keys now live at these labels."""
        if len(self._recent) + len(keys) > max(RECENT_AT_LEAST, self._nodes // 16):
            self._sort_keys()
        else:
            self._recent.update(zip(keys.tolist(), labels.tolist(), strict=True))

    def _grow(self, nodes: int) -> None:
        if nodes <= len(self._keys):
            return
        capacity = max(nodes, 2 * len(self._keys))
        keys = np.full(capacity, -1, dtype=np.int64)
        keys[: len(self._keys)] = self._keys
        bits = np.zeros((capacity + 7) // 8, dtype=np.uint8)
        bits[: len(self._live_bits)] = self._live_bits
        self._keys, self._live_bits = keys, bits

    def _set_live(self, labels: np.ndarray, live: bool) -> None:
        masks = np.left_shift(1, labels & 7).astype(np.uint8)
        if live:
            np.bitwise_or.at(self._live_bits, labels >> 3, masks)
        else:
            np.bitwise_and.at(self._live_bits, labels >> 3, ~masks)

    # mutation ---------------------------------------------------------------

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        keys = _as_keys(keys)
        vectors = _as_vectors(vectors, self.dim)
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        if not len(keys):
            return
        self._catch_up()
        if self._rebuild is not None:
            self._rebuild.journal.append((keys, vectors.copy()))
        self._add(keys, vectors)
        self._maybe_rebuild()

    def remove(self, keys: np.ndarray) -> None:
        keys = _as_keys(keys)
        if not len(keys):
            return
        self._catch_up()
        if self._rebuild is not None:
            self._rebuild.journal.append((keys, None))
        self._remove(keys)
        self._maybe_rebuild()

    def _add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Append nodes; a key already present (or repeated in `keys`) keeps only its last."""
        self._remove(keys)
        start = self._nodes
        labels = np.arange(start, start + len(keys), dtype=np.int64)
        self._grow(start + len(keys))
        self._use_threads(len(keys))
        self._graph.add(vectors)
        self._keys[labels] = keys
        self._set_live(labels, True)
        unique, first_from_end = np.unique(keys[::-1], return_index=True)
        if len(unique) != len(keys):
            last = len(keys) - 1 - first_from_end
            shadowed = np.ones(len(keys), dtype=bool)
            shadowed[last] = False
            self._bury(labels[shadowed])
            self._remember(unique, labels[last])
        else:
            self._remember(keys, labels)

    def _remove(self, keys: np.ndarray) -> None:
        labels = self._labels_of(keys)
        held = labels >= 0
        if held.any():
            if self._recent:
                for key in keys[held].tolist():
                    self._recent.pop(key, None)
            self._bury(np.unique(labels[held]))

    def _bury(self, labels: np.ndarray) -> None:
        if len(labels):
            self._keys[labels] = -1
            self._set_live(labels, False)
            self._tombstones += len(labels)

    # rebuild ----------------------------------------------------------------

    def needs_rebuild(self) -> bool:
        return self._tombstones >= max(self.rebuild_min, self.rebuild_fraction * self._nodes)

    def _maybe_rebuild(self) -> None:
        if self._rebuild is None and self.needs_rebuild():
            self.rebuild(wait=not self.background_rebuild)

    def rebuild(self, *, wait: bool = True) -> None:
        """Build a graph of the live vectors only; with wait=False it is swapped in later."""
        if self._rebuild is not None:
            if wait:
                self._catch_up(wait=True)
            return
        live = np.flatnonzero(self._keys[: self._nodes] >= 0)
        keys = self._keys[live].copy()
        vectors = (
            self._graph.reconstruct_batch(live)
            if len(live)
            else np.empty((0, self.dim), dtype=np.float32)
        )
        result: Future[tuple[Any, np.ndarray]] = Future()

        def build() -> None:
            try:
                faiss.omp_set_num_threads(self.threads if wait else max(1, self.threads // 2))
                graph = self._new_graph()
                if len(vectors):
                    graph.add(vectors)
                result.set_result((graph, keys))
            except BaseException as exc:
                result.set_exception(exc)

        self._rebuild = _Rebuild(result)
        if wait:
            build()
            self._catch_up(wait=True)
        else:
            threading.Thread(target=build, name="hnsw-rebuild", daemon=True).start()

    def _catch_up(self, *, wait: bool = False) -> None:
        """Swap in a finished rebuild and replay the writes it missed."""
        pending = self._rebuild
        if pending is None or not (wait or pending.result.done()):
            return
        self._rebuild = None
        graph, keys = pending.result.result()
        self._reset(graph, keys)
        for journal_keys, vectors in pending.journal:
            if vectors is None:
                self._remove(journal_keys)
            else:
                self._add(journal_keys, vectors)
        self.rebuilds += 1

    def wait_for_rebuild(self) -> None:
        """Finish any background rebuild now (tests, and before a planned snapshot)."""
        self._catch_up(wait=True)

    # search -----------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = _as_vectors(queries, self.dim)
        nodes = self._nodes
        if allowed is None:
            candidates = None
            bits = self._live_bits if self._tombstones else None
            available = len(self)
        else:
            found = self._labels_of(_as_keys(allowed))
            candidates = np.unique(found[found >= 0])
            available = len(candidates)
            if available <= max(EXACT_SCAN_BELOW, k):
                return self._exact(queries, k, candidates)
            mask = np.zeros(nodes, dtype=bool)
            mask[candidates] = True
            bits = np.packbits(mask, bitorder="little")
        if available == 0:
            return _empty(len(queries), k)
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        if bits is not None:
            params.sel = faiss.IDSelectorBitmap(bits)
        self._use_threads(len(queries))
        scores, labels = self._graph.search(queries, k, params=params)
        keys = np.where(labels >= 0, self._keys[np.maximum(labels, 0)], -1)
        short = np.flatnonzero((keys >= 0).sum(axis=1) < min(k, available))
        if len(short):
            if candidates is None:
                candidates = np.flatnonzero(self._keys[:nodes] >= 0)
            scores[short], keys[short] = self._exact(queries[short], k, candidates)
        return scores, keys

    def _exact(
        self, queries: np.ndarray, k: int, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        scores, keys = _empty(len(queries), k)
        if not len(labels):
            return scores, keys
        vectors = self._graph.reconstruct_batch(labels)
        sims = queries @ vectors.T
        top = min(k, len(labels))
        best = np.argpartition(-sims, top - 1, axis=1)[:, :top]
        order = np.argsort(-np.take_along_axis(sims, best, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(best, order, axis=1)
        scores[:, :top] = np.take_along_axis(sims, best, axis=1)
        keys[:, :top] = self._keys[labels[best]]
        return scores, keys

    # snapshots --------------------------------------------------------------

    def serialize(self) -> bytes:
        """Graph, node -> key table (tombstones as -1) and the parameters, in one blob.

        A running background rebuild is not waited for: the snapshot is this
        graph, tombstones included, which loads back to exactly this state.
        """
        nodes = self._nodes
        graph = faiss.serialize_index(self._graph)
        header = json.dumps(
            {
                "version": SNAPSHOT_VERSION,
                "dim": self.dim,
                "m": self.m,
                "nodes": nodes,
                "graph_bytes": len(graph),
            }
        ).encode()
        return b"".join(
            [
                SNAPSHOT_MAGIC,
                struct.pack("<Q", len(header)),
                header,
                self._keys[:nodes].tobytes(),
                memoryview(graph).cast("B"),
            ]
        )

    def load(self, path: Path) -> None:
        # Streamed from the file, so a large graph is never held twice in memory.
        with path.open("rb") as f:
            if f.read(len(SNAPSHOT_MAGIC)) != SNAPSHOT_MAGIC:
                raise ValueError(f"{path} is not an HNSW index snapshot")
            size = f.read(8)
            if len(size) != 8:
                raise ValueError(f"{path} is truncated")
            (header_len,) = struct.unpack("<Q", size)
            header = json.loads(f.read(header_len))
            if header["version"] != SNAPSHOT_VERSION:
                raise ValueError(f"HNSW snapshot format {header['version']} is not supported")
            if header["dim"] != self.dim:
                raise ValueError(f"snapshot has dimension {header['dim']}, expected {self.dim}")
            if header["m"] != self.m:
                raise ValueError(f"snapshot graph has M={header['m']}, configured M={self.m}")
            nodes = int(header["nodes"])
            keys = np.frombuffer(f.read(8 * nodes), dtype=np.int64).copy()
            graph = faiss.read_index(faiss.PyCallbackIOReader(f.read))
        if len(keys) != nodes or graph.ntotal != nodes or graph.d != self.dim:
            raise ValueError(f"{path} is inconsistent: {graph.ntotal} nodes, header says {nodes}")
        # FAISS keeps the efConstruction a graph was built with. One built with
        # less than the configured value needs a larger efSearch for the same
        # recall (1M x 128, efSearch 64: 0.967 built with 80, 0.994 with 160),
        # so it is refused like a graph of another M, and rebuilt from SQLite.
        built_with = int(graph.hnsw.efConstruction)
        if built_with < self.ef_construction:
            raise ValueError(
                f"snapshot graph was built with efConstruction {built_with}, below the "
                f"configured {self.ef_construction}"
            )
        graph.hnsw.efConstruction = self.ef_construction  # for the nodes added from now on
        graph.hnsw.efSearch = self.ef_search
        self._rebuild = None
        self._reset(graph, keys)
