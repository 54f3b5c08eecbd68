"""Vector search engines side by side, and the floor a flat scan cannot beat.

FAISS flat (exact), HNSW and IVF against what a user would otherwise write:
NumPy matmul + argpartition, and scikit-learn `cosine_similarity` + `argsort`
(the tutorial way). For each catalogue size and dimension: build time, index
memory, single-query latency p50/p99 (one query per call, FAISS on one thread
as the service runs it), batched throughput (every core), and recall@10
against the exact answer. Beside them, the memory-bandwidth floor of a flat
scan measured in the same run: the bytes a query must read divided by the read
bandwidth of a plain NumPy sum over a large array.

    .venv/bin/python -m benchmarks.search             # 10k, 100k, 1M x 64, 128: an hour or more
    .venv/bin/python -m benchmarks.search --quick     # 10k x 64, a minute, RESULTS.md untouched
    .venv/bin/python -m benchmarks.search --sizes 100k --dims 128 --no-write

Writes its section of benchmarks/RESULTS.md (see benchmarks/results.py).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from sklearn.metrics.pairwise import cosine_similarity

from app.config import Settings
from benchmarks.results import run_lines, update_section, versions
from benchmarks.vectors import clustered_unit_vectors

K = 10
# The graph the service builds by default; benchmarks/hnsw_params.py compares others.
HNSW_M = Settings.model_fields["hnsw_m"].default
HNSW_EF_CONSTRUCTION = Settings.model_fields["hnsw_ef_construction"].default
HNSW_EF_SEARCH = (64, 128, 256)
IVF_NPROBE = (8, 32)

Search = Callable[[np.ndarray], np.ndarray]  # [q, d] queries -> [q, K] ids


@dataclass
class Row:
    n: int
    dim: int
    method: str
    build_s: float
    memory_mb: float
    single: np.ndarray  # ms per one-query call
    batch_qps: float
    recall: float

    def p(self, q: float) -> float:
        return float(np.percentile(self.single, q))


@dataclass
class Floor:
    n: int
    dim: int
    one_thread_ms: float
    all_cores_ms: float


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def parse_sizes(text: str) -> list[int]:
    units = {"k": 1_000, "m": 1_000_000}
    out = []
    for part in text.lower().split(","):
        part = part.strip()
        out.append(int(float(part[:-1]) * units[part[-1]]) if part[-1] in units else int(part))
    return out


def size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and not n % 1_000_000 else f"{n // 1000}k"


# the floor -------------------------------------------------------------------


def read_bandwidth(gib: float = 1.0, repeats: int = 5) -> tuple[float, float]:
    """Bytes per second a plain sum reads from memory: one thread, and every core at once.

    NumPy releases the GIL inside the reduction, so threads summing their own
    slices read in parallel. The best of several runs is the machine's floor.
    """
    data = np.ones(int(gib * 2**30) // 4, dtype=np.float32)
    data.sum()

    def best(threads: int) -> float:
        parts = np.array_split(data, threads)
        fastest = float("inf")
        for _ in range(repeats):
            workers = [threading.Thread(target=part.sum) for part in parts]
            started = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            fastest = min(fastest, time.perf_counter() - started)
        return data.nbytes / fastest

    return best(1), best(cores())


# engines ---------------------------------------------------------------------


def faiss_search(index: Any, threads_single: int = 1) -> tuple[Search, Search]:
    def single(q: np.ndarray) -> np.ndarray:
        faiss.omp_set_num_threads(threads_single)
        return np.asarray(index.search(q, K)[1])

    def batch(q: np.ndarray) -> np.ndarray:
        faiss.omp_set_num_threads(cores())
        return np.asarray(index.search(q, K)[1])

    return single, batch


def numpy_search(base: np.ndarray) -> Search:
    def search(q: np.ndarray) -> np.ndarray:
        sims = q @ base.T
        top = np.argpartition(-sims, K - 1, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        return np.take_along_axis(top, order, axis=1)

    return search


def sklearn_search(base: np.ndarray) -> Search:
    def search(q: np.ndarray) -> np.ndarray:
        sims = cosine_similarity(q, base)
        return np.argsort(-sims, axis=1)[:, :K]

    return search


# measuring -------------------------------------------------------------------


def time_single(search: Search, queries: np.ndarray, budget_s: float) -> np.ndarray:
    """ms per one-query call, for as many queries as fit in the budget (at least 20)."""
    search(queries[:1])
    times = []
    deadline = time.perf_counter() + budget_s
    for i in range(len(queries)):
        started = time.perf_counter()
        search(queries[i : i + 1])
        times.append((time.perf_counter() - started) * 1000)
        if i >= 19 and time.perf_counter() > deadline:
            break
    return np.array(times)


def time_batch(
    search: Search, queries: np.ndarray, chunk: int, budget_s: float
) -> tuple[float, np.ndarray]:
    """Queries per second in chunks of `chunk`, and the ids of the queries it got through."""
    found = []
    started = time.perf_counter()
    for i in range(0, len(queries), chunk):
        found.append(search(queries[i : i + chunk]))
        if time.perf_counter() - started > budget_s:
            break
    elapsed = time.perf_counter() - started
    ids = np.concatenate(found)
    return len(ids) / elapsed, ids


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (len(found) * K)


def measure(
    n: int,
    dim: int,
    method: str,
    build: Callable[[], tuple[Search, Search, float]],
    queries: np.ndarray,
    truth: np.ndarray,
    args: argparse.Namespace,
    *,
    chunk: int = 1000,
    shared_build: Row | None = None,
) -> Row:
    started = time.perf_counter()
    single, batch, memory = build()
    build_s = time.perf_counter() - started
    times = time_single(single, queries, args.budget)
    qps, found = time_batch(batch, queries, chunk, args.budget)
    if shared_build is not None:
        build_s = shared_build.build_s  # the same index, searched with other parameters
    recall = recall_at_k(found, truth[: len(found)])
    row = Row(n, dim, method, build_s, memory / 2**20, times, qps, recall)
    print(
        f"  {method:<28} build {build_s:7.1f} s  {row.memory_mb:7.1f} MiB  "
        f"p50 {row.p(50):8.3f} ms  p99 {row.p(99):8.3f} ms  "
        f"batch {qps:9.0f} q/s  recall@10 {row.recall:.3f}",
        flush=True,
    )
    return row


def bench(n: int, dim: int, args: argparse.Namespace) -> list[Row]:
    base, queries = clustered_unit_vectors(n, dim, queries=args.queries, seed=n + dim)
    print(f"{size_label(n)} x {dim}", flush=True)
    flat = faiss.IndexFlatIP(dim)
    flat.add(base)
    faiss.omp_set_num_threads(cores())
    truth = np.asarray(flat.search(queries, K)[1])
    size = float(len(faiss.serialize_index(flat)))
    rows: list[Row] = []

    def faiss_built(index: Any, threads_single: int = 1) -> tuple[Search, Search, float]:
        single, batch = faiss_search(index, threads_single)
        return single, batch, float(len(faiss.serialize_index(index)))

    def flat_index() -> tuple[Search, Search, float]:
        index = faiss.IndexFlatIP(dim)
        index.add(base)
        return faiss_built(index)

    rows.append(measure(n, dim, "faiss flat", flat_index, queries, truth, args))
    rows.append(
        measure(
            n,
            dim,
            f"faiss flat, {cores()} threads/query",
            lambda: (*faiss_search(flat, cores()), size),
            queries,
            truth,
            args,
        )
    )

    hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    for i, ef in enumerate(HNSW_EF_SEARCH):

        def hnsw_index(ef: int = ef, first: bool = i == 0) -> tuple[Search, Search, float]:
            if first:
                faiss.omp_set_num_threads(cores())
                hnsw.add(base)
            hnsw.hnsw.efSearch = ef
            return faiss_built(hnsw)

        name = f"faiss HNSW M{HNSW_M} ef{ef}"
        shared = rows[-1] if i else None
        rows.append(measure(n, dim, name, hnsw_index, queries, truth, args, shared_build=shared))

    nlist = max(16, int(np.sqrt(n)))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    for i, nprobe in enumerate(IVF_NPROBE):

        def ivf_index(nprobe: int = nprobe, first: bool = i == 0) -> tuple[Search, Search, float]:
            if first:
                faiss.omp_set_num_threads(cores())
                sample = base[:: max(1, n // (50 * nlist))]
                ivf.train(sample)
                ivf.add(base)
            ivf.nprobe = nprobe
            return faiss_built(ivf)

        name = f"faiss IVF{nlist} nprobe{nprobe}"
        shared = rows[-1] if i else None
        rows.append(measure(n, dim, name, ivf_index, queries, truth, args, shared_build=shared))

    def baseline(search: Search) -> Callable[[], tuple[Search, Search, float]]:
        return lambda: (search, search, float(base.nbytes))

    rows.append(
        measure(
            n,
            dim,
            "numpy matmul+argpartition",
            baseline(numpy_search(base)),
            queries,
            truth,
            args,
            chunk=256,
        )
    )
    rows.append(
        measure(
            n,
            dim,
            "sklearn cosine+argsort",
            baseline(sklearn_search(base)),
            queries,
            truth,
            args,
            chunk=64,
        )
    )
    return rows


# report ----------------------------------------------------------------------


def table(rows: list[Row], floors: list[Floor]) -> str:
    flat_p50 = {(r.n, r.dim): r.p(50) for r in rows if r.method == "faiss flat"}
    lines = [
        "| vectors | dim | method | build s | memory MiB | p50 ms | p99 ms | p50 speed-up vs flat "
        "| batched q/s | recall@10 |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speed = flat_p50[(r.n, r.dim)] / r.p(50)
        lines.append(
            f"| {size_label(r.n)} | {r.dim} | {r.method} | {r.build_s:.1f} | {r.memory_mb:.0f} "
            f"| {r.p(50):.3f} | {r.p(99):.3f} | {speed:.1f}x | {r.batch_qps:,.0f} "
            f"| {r.recall:.3f} |"
        )
    lines += [
        "",
        "Flat scan against the memory-bandwidth floor (bytes a query reads / measured read "
        "bandwidth):",
        "",
        "| vectors | dim | bytes scanned | floor, 1 thread ms | floor, all cores ms "
        "| faiss flat p50 ms | p50 / 1-thread floor |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    p50 = {(r.n, r.dim): r.p(50) for r in rows if r.method == "faiss flat"}
    for f in floors:
        flat = p50[(f.n, f.dim)]
        lines.append(
            f"| {size_label(f.n)} | {f.dim} | {f.n * f.dim * 4 / 2**20:.0f} MiB "
            f"| {f.one_thread_ms:.2f} | {f.all_cores_ms:.2f} | {flat:.2f} "
            f"| {flat / f.one_thread_ms:.2f}x |"
        )
    return "\n".join(lines)


def targets(rows: list[Row], floors: list[Floor]) -> str:
    """The issue's search targets, for the largest size measured at each dimension."""
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    for f in floors:
        if f.n != max(g.n for g in floors if g.dim == f.dim):
            continue
        flat = next(r for r in rows if (r.n, r.dim, r.method) == (f.n, f.dim, "faiss flat"))
        ok = flat.p(50) <= 2 * f.one_thread_ms
        lines.append(
            f"| exact flat search at {size_label(f.n)} x {f.dim}: single-query latency within "
            f"2x of the bandwidth floor | p50 {flat.p(50):.1f} ms, floor {f.one_thread_ms:.1f} ms "
            f"on one thread ({flat.p(50) / f.one_thread_ms:.2f}x), {f.all_cores_ms:.1f} ms on "
            f"all cores | {'met' if ok else '**missed**'} |"
        )
        hnsw = [
            r for r in rows if (r.n, r.dim) == (f.n, f.dim) and r.method.startswith("faiss HNSW")
        ]
        good = [r for r in hnsw if r.recall >= 0.98]
        best = min(good, key=lambda r: r.p(50)) if good else max(hnsw, key=lambda r: r.recall)
        speed = flat.p(50) / best.p(50)
        ok = best.recall >= 0.98 and speed >= 40
        lines.append(
            f"| HNSW at {size_label(f.n)} x {f.dim}: recall@10 >= 0.98 at >= 40x flat's "
            f"single-query speed | {best.method}: recall {best.recall:.3f}, p50 "
            f"{best.p(50):.3f} ms = {speed:.0f}x flat | {'met' if ok else '**missed**'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="10k,100k,1M", help="catalogue sizes (default %(default)s)"
    )
    parser.add_argument("--dims", default="64,128", help="dimensions (default %(default)s)")
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries per size")
    parser.add_argument(
        "--budget", type=float, default=20.0, help="seconds per method and phase at most"
    )
    parser.add_argument("--quick", action="store_true", help="10k x 64, few queries, no write")
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.dims, args.queries, args.budget, args.no_write = "10k", "64", 200, 3, True
    sizes, dims = parse_sizes(args.sizes), [int(d) for d in args.dims.split(",")]
    started = time.time()
    busy = os.getloadavg()
    one, every = read_bandwidth()
    print(f"read bandwidth: {one / 1e9:.1f} GB/s one thread, {every / 1e9:.1f} GB/s all cores")
    rows: list[Row] = []
    floors: list[Floor] = []
    for dim in dims:
        for n in sizes:
            rows += bench(n, dim, args)
            nbytes = n * dim * 4
            floors.append(Floor(n, dim, nbytes / one * 1000, nbytes / every * 1000))
    report = table(rows, floors) + "\n\nTargets from issue 6:\n\n" + targets(rows, floors)
    print(report)
    if not args.no_write:
        body = "\n".join(
            [
                "## Vector search: FAISS vs NumPy vs scikit-learn (`benchmarks/search.py`)",
                "",
                *run_lines("benchmarks.search", started, busy),
                f"- versions: {versions('faiss-cpu', 'numpy', 'scikit-learn')}",
                f"- read bandwidth (NumPy sum over 1 GiB, best of 5): {one / 1e9:.1f} GB/s on "
                f"one thread, {every / 1e9:.1f} GB/s on {cores()} threads",
                f"- data: clustered unit vectors (benchmarks/vectors.py), {args.queries} held-out "
                "queries from the same clusters, k = 10; recall@10 against an exact scan",
                f"- HNSW: M {HNSW_M}, efConstruction {HNSW_EF_CONSTRUCTION} (the service's "
                "defaults; `benchmarks/hnsw_params.py` compares other efConstruction values)",
                "- single query: one query per call; FAISS on one OpenMP thread as the service "
                "runs it (the `threads/query` row uses every core); NumPy and scikit-learn with "
                "their default BLAS threads. Batched: chunks of 1000 queries (NumPy 256, "
                "scikit-learn 64) on every core",
                "- memory: the serialised FAISS index, or the raw float32 array the baselines "
                "scan (scikit-learn also copies it to normalise on every call)",
                "",
                report,
            ]
        )
        update_section("search", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
