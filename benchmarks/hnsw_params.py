"""HNSW build and search parameters: what recall each efConstruction buys, and at what cost.

A graph built with a larger efConstruction takes longer to build but links
each node better, so a search reaches a given recall with a smaller efSearch,
which is what a query pays for. This measures that trade on the same clustered
vectors and queries as `benchmarks/search.py` (same seeds): build time on every
core, then recall@10 against an exact scan and single-query latency on one
thread (as the service searches) for each efSearch.

    .venv/bin/python -m benchmarks.hnsw_params                      # 1M x 64 and 128
    .venv/bin/python -m benchmarks.hnsw_params --quick              # 20k x 64, no write
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import faiss
import numpy as np

from benchmarks.results import run_lines, update_section, versions
from benchmarks.search import (
    HNSW_M,
    cores,
    faiss_search,
    parse_sizes,
    recall_at_k,
    size_label,
    time_single,
)
from benchmarks.vectors import clustered_unit_vectors

K = 10


@dataclass
class Row:
    n: int
    dim: int
    ef_construction: int
    ef_search: int
    build_s: float
    p50: float
    p99: float
    flat_p50: float
    recall: float


def bench(n: int, dim: int, args: argparse.Namespace) -> list[Row]:
    base, queries = clustered_unit_vectors(n, dim, queries=args.queries, seed=n + dim)
    flat = faiss.IndexFlatIP(dim)
    flat.add(base)
    faiss.omp_set_num_threads(cores())
    truth = np.asarray(flat.search(queries, K)[1])
    flat_single, _ = faiss_search(flat)
    flat_p50 = float(np.percentile(time_single(flat_single, queries, args.budget), 50))
    del flat
    rows = []
    for ef_construction in args.ef_construction:
        graph = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = ef_construction
        faiss.omp_set_num_threads(cores())
        started = time.perf_counter()
        graph.add(base)
        build_s = time.perf_counter() - started
        for ef_search in args.ef_search:
            graph.hnsw.efSearch = ef_search
            single, batch = faiss_search(graph)
            recall = recall_at_k(batch(queries), truth)
            ms = time_single(single, queries, args.budget)
            row = Row(
                n,
                dim,
                ef_construction,
                ef_search,
                build_s,
                float(np.percentile(ms, 50)),
                float(np.percentile(ms, 99)),
                flat_p50,
                recall,
            )
            print(
                f"{size_label(n)} x {dim} efConstruction {ef_construction} ({build_s:.0f} s) "
                f"efSearch {ef_search}: recall@10 {recall:.3f}, p50 {row.p50:.3f} ms",
                flush=True,
            )
            rows.append(row)
        del graph
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| vectors | dim | efConstruction | build s | efSearch | p50 ms | p99 ms "
        "| p50 speed-up vs flat | recall@10 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {size_label(r.n)} | {r.dim} | {r.ef_construction} | {r.build_s:.0f} "
            f"| {r.ef_search} | {r.p50:.3f} | {r.p99:.3f} | {r.flat_p50 / r.p50:.0f}x "
            f"| {r.recall:.3f} |"
        )
    return "\n".join(lines)


def fastest_at(rows: list[Row], recall: float) -> str:
    """Per size and efConstruction, the cheapest efSearch that reaches `recall`."""
    lines = []
    for key in sorted({(r.n, r.dim, r.ef_construction) for r in rows}):
        good = [r for r in rows if (r.n, r.dim, r.ef_construction) == key and r.recall >= recall]
        n, dim, efc = key
        if good:
            best = min(good, key=lambda r: r.p50)
            lines.append(
                f"- {size_label(n)} x {dim}, efConstruction {efc}: efSearch {best.ef_search}, "
                f"recall@10 {best.recall:.3f} at {best.p50:.3f} ms"
            )
        else:
            lines.append(f"- {size_label(n)} x {dim}, efConstruction {efc}: none reached it")
    return "\n".join(lines)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1M", help="vectors (default %(default)s)")
    parser.add_argument("--dims", default="64,128", help="dimensions (default %(default)s)")
    parser.add_argument("--ef-construction", type=ints, default=[80, 160], help="comma-separated")
    parser.add_argument("--ef-search", type=ints, default=[48, 64, 96, 128], help="comma-separated")
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per latency phase")
    parser.add_argument("--quick", action="store_true", help="20k x 64, few queries, no write")
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.dims, args.queries, args.budget, args.no_write = "20k", "64", 200, 1, True
    started = time.time()
    busy = os.getloadavg()
    rows: list[Row] = []
    for dim in ints(args.dims):
        rows += bench(parse_sizes(args.size)[0], dim, args)
    report = (
        table(rows)
        + "\n\nThe cheapest efSearch with recall@10 >= 0.98, per graph:\n\n"
        + fastest_at(rows, 0.98)
    )
    print(report)
    if not args.no_write:
        body = "\n".join(
            [
                "## HNSW parameters: efConstruction against efSearch (`benchmarks/hnsw_params.py`)",
                "",
                *run_lines("benchmarks.hnsw_params", started, busy),
                f"- versions: {versions('faiss-cpu', 'numpy')}",
                f"- data: as in `benchmarks/search.py` (same seeds), {args.queries} held-out "
                f"queries, k = {K}; M = {HNSW_M}; build on {cores()} threads; single queries "
                "on one thread; speed-up against FAISS's flat search of the same vectors, "
                "one query on one thread",
                "",
                report,
            ]
        )
        update_section("hnsw-params", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
