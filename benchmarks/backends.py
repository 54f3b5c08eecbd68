"""What switching catalogue backends costs: local FAISS (flat, HNSW) vs Milvus Lite.

All backends get the same clustered unit vectors shaped like trained embeddings
(benchmarks/vectors.py) and the same held-out queries from those clusters. For each: recall@10
against an exact scan, single-query latency p50/p99, batched throughput, and
insert throughput. The local rows time the in-memory index alone (what a
search touches); the Milvus rows go through MilvusCatalog, metadata and all,
since that is the whole cost a request pays there. A separate line times the
local catalogue's full write path (SQLite + FAISS) for the insert comparison.

    .venv/bin/python -m benchmarks.backends            # 100k x 128, ~10 min on 2 cores
    .venv/bin/python -m benchmarks.backends --n 20000  # a quick look

Writes its own section of benchmarks/RESULTS.md (see benchmarks/results.py).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from app.catalog import Catalog, NewItem
from app.config import Settings
from app.vector_index import FlatIndex, VectorIndex
from benchmarks.results import machine, update_section, versions
from benchmarks.vectors import clustered_unit_vectors

K = 10
MODEL_ID = "0" * 64


@dataclass
class Row:
    backend: str
    index: str
    recall: float
    p50_ms: float
    p99_ms: float
    qps: float
    insert_per_s: float
    note: str = ""


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    index = faiss.IndexFlatIP(data.shape[1])
    index.add(data)
    return np.asarray(index.search(queries, k)[1])


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def timed_queries(
    search: Callable[[np.ndarray], list[np.ndarray]], queries: np.ndarray, batch: int
) -> tuple[list[np.ndarray], np.ndarray, float]:
    """Results and latencies of one query at a time, then QPS of batches of `batch`."""
    search(queries[:batch])  # warm-up
    found: list[np.ndarray] = []
    latencies = np.empty(len(queries))
    for i, q in enumerate(queries):
        started = time.perf_counter()
        found.extend(search(q[None, :]))
        latencies[i] = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(0, len(queries), batch):
        search(queries[i : i + batch])
    qps = len(queries) / (time.perf_counter() - started)
    return found, latencies * 1000, qps


def bench_index(
    name: str, index: VectorIndex, data: np.ndarray, queries: np.ndarray, truth: np.ndarray
) -> Row:
    keys = np.arange(len(data), dtype=np.int64)
    started = time.perf_counter()
    for i in range(0, len(data), 1000):
        index.add(keys[i : i + 1000], data[i : i + 1000])
    insert = len(data) / (time.perf_counter() - started)

    def search(q: np.ndarray) -> list[np.ndarray]:
        return list(index.search(q, K)[1])

    found, ms, qps = timed_queries(search, queries, batch=100)
    p50, p99 = np.percentile(ms, [50, 99])
    return Row("local", name, recall(found, truth), p50, p99, qps, insert)


def hnsw_index(dim: int, settings: Settings) -> tuple[VectorIndex, str]:
    try:
        from app.hnsw_index import HnswIndex
    except ImportError:
        return _FaissHnsw(dim, settings), "FAISS IndexHNSWFlat directly (app.hnsw_index missing)"
    index = HnswIndex(
        dim,
        m=settings.hnsw_m,
        ef_construction=settings.hnsw_ef_construction,
        ef_search=settings.hnsw_ef_search,
    )
    return index, "app.hnsw_index.HnswIndex"


class _FaissHnsw(FlatIndex):
    """Stand-in with the same graph parameters, for trees without app.hnsw_index."""

    kind = "hnsw"

    def __init__(self, dim: int, settings: Settings) -> None:
        super().__init__(dim)
        graph = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = settings.hnsw_ef_construction
        graph.hnsw.efSearch = settings.hnsw_ef_search
        self._index = faiss.IndexIDMap2(graph)


def items(data: np.ndarray, start: int, stop: int) -> list[NewItem]:
    return [
        NewItem(id=str(i), embedding=data[i], metadata={"shard": i % 16, "sku": f"sku-{i}"})
        for i in range(start, stop)
    ]


def bench_catalog_inserts(catalog: Catalog, data: np.ndarray) -> float:
    started = time.perf_counter()
    for i in range(0, len(data), 1000):
        catalog.upsert(items(data, i, min(i + 1000, len(data))))
    return len(data) / (time.perf_counter() - started)


def bench_milvus(
    settings: Settings, data: np.ndarray, queries: np.ndarray, truth: np.ndarray
) -> Row:
    from pymilvus import MilvusClient

    from app.milvus_catalog import MilvusCatalog

    if settings.milvus_uri.endswith(".db"):
        Path(settings.milvus_uri).parent.mkdir(parents=True, exist_ok=True)
    client = MilvusClient(settings.milvus_uri, token=settings.milvus_token)
    if client.has_collection(settings.milvus_collection):
        client.drop_collection(settings.milvus_collection)
    catalog = MilvusCatalog(settings, model_id=MODEL_ID, embedding_dim=data.shape[1])
    try:
        insert = bench_catalog_inserts(catalog, data)
        # Milvus indexes sealed segments: flush so that searches use the index.
        started = time.perf_counter()
        client.flush(settings.milvus_collection)
        catalog.search(queries[:1], K)
        sealed = time.perf_counter() - started

        def search(q: np.ndarray) -> list[np.ndarray]:
            return [np.array([int(h.id) for h in hits]) for hits in catalog.search(q, K)]

        found, ms, qps = timed_queries(search, queries, batch=100)
    finally:
        catalog.close()
        client.drop_collection(settings.milvus_collection)
        client.close()
    p50, p99 = np.percentile(ms, [50, 99])
    lite = settings.milvus_uri.endswith(".db")
    return Row(
        "milvus-lite" if lite else "milvus",
        settings.milvus_index_type,
        recall(found, truth),
        p50,
        p99,
        qps,
        insert,
        f"flush + index build {sealed:.1f} s after the inserts",
    )


def bench_local_catalog(settings: Settings, data: np.ndarray) -> float:
    from app.local_catalog import LocalCatalog

    catalog = LocalCatalog(settings, model_id=MODEL_ID, embedding_dim=data.shape[1])
    try:
        return bench_catalog_inserts(catalog, data)
    finally:
        catalog.close()


def table(rows: list[Row]) -> str:
    lines = [
        "| backend | index | recall@10 | p50 ms | p99 ms | batched QPS | inserts/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.backend} | {r.index} | {r.recall:.3f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.qps:,.0f} | {r.insert_per_s:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="catalogue vectors")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0, help="FAISS threads; 0 = all cores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--milvus-index", nargs="+", default=["HNSW", "FLAT"])
    parser.add_argument(
        "--milvus-uri",
        help="a Milvus server to measure (http://host:19530; LOOKALIKE_MILVUS_TOKEN is used); "
        "default: a temporary Milvus Lite database",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    settings = Settings(_env_file=None)
    conditions = machine()
    print(conditions, file=sys.stderr)

    data, queries = clustered_unit_vectors(args.n, args.dim, queries=args.queries, seed=args.seed)
    truth = exact_top_k(data, queries, K)
    rows: list[Row] = []
    notes: list[str] = []
    rows.append(bench_index("flat", FlatIndex(args.dim), data, queries, truth))
    print(table(rows), file=sys.stderr)
    hnsw, source = hnsw_index(args.dim, settings)
    rows.append(bench_index("hnsw", hnsw, data, queries, truth))
    notes.append(f"local hnsw: {source}")
    print(table(rows), file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        for i, kind in enumerate(args.milvus_index):
            params: dict[str, Any] = {
                "milvus_uri": args.milvus_uri or str(Path(tmp) / "bench.db"),
                "milvus_collection": f"lookalike_bench_{i}",
                "milvus_index_type": kind,
            }
            if kind != "HNSW":
                params |= {"milvus_index_params": "{}", "milvus_search_params": "{}"}
            row = bench_milvus(settings.model_copy(update=params), data, queries, truth)
            rows.append(row)
            notes.append(f"{row.backend} {kind}: {row.note}")
            print(table(rows), file=sys.stderr)
        local_writes = bench_local_catalog(
            settings.model_copy(update={"data_dir": Path(tmp) / "local"}), data
        )
    conditions += f"; at the end: {machine().split('; ')[1]}"
    print(table(rows))
    command = "python -m benchmarks.backends " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    lite = args.milvus_uri is None
    lite_note = [
        "Milvus Lite is the test and development engine: it runs in this process, "
        "and with milvus-lite 3.2.2 each search also builds, in Python, a mask over "
        "every stored row (`_build_local_mask` in `search/executor_indexed.py`; a "
        "cProfile of one 100k search: ~57 ms there, 0.3 ms in FAISS' HNSW). Its "
        "latency therefore grows with the catalogue whatever the index, and says "
        "little about a Milvus server, whose figures depend on its deployment and "
        "add a network round trip.",
        "",
    ]
    engine = "Milvus Lite" if lite else "a Milvus server"
    body = "\n".join(
        [
            f"## Catalogue backends: local FAISS vs {engine}",
            "",
            f"{args.n:,} x {args.dim} clustered unit vectors (`benchmarks/vectors.py`, seed "
            f"{args.seed}), {args.queries:,} held-out queries, k = {K}; recall against an exact "
            "scan. Latency is one query per call; batched QPS sends 100 queries per call. "
            "Local rows time the in-memory index; Milvus rows go through `MilvusCatalog` "
            f"(gRPC to {engine}, metadata returned). HNSW uses each side's defaults: "
            f"local M = {settings.hnsw_m}, efConstruction = {settings.hnsw_ef_construction}, "
            f"efSearch = {settings.hnsw_ef_search}; Milvus index parameters "
            f"`{settings.milvus_index_params}`, search parameters "
            f"`{settings.milvus_search_params}`.",
            "",
            table(rows),
            "",
            "Catalogue writes, 1,000 items per call: local (SQLite + FAISS flat) "
            f"{local_writes:,.0f} items/s, against the Milvus rows' inserts/s, which are "
            f"this same write path (`upsert` with metadata) into {engine}.",
            "",
            *(lite_note if lite else []),
            "The load averages below say how busy the machine was: where they exceed the "
            "core count, other jobs shared it and p99 and batched figures are inflated.",
            "",
            *[f"- {note}" for note in notes],
            f"- machine: {conditions}",
            f"- versions: {versions('faiss-cpu', 'numpy', 'pymilvus', 'milvus-lite')}",
            f"- command: `{command.strip()}`",
        ]
    )
    if not args.no_write:
        update_section("backends" if lite else "backends-server", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
