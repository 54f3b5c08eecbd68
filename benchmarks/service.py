"""Lookalike's HTTP service under load, beside a naive server and the HTTP floor, in one run.

Real servers on 127.0.0.1, each its own process (`python -m app serve`,
`benchmarks/naive_server.py`, `benchmarks/http_floor.py`), driven by
`benchmarks/load.py` in another process with 1, 4, 16 and 64 closed-loop
clients: requests/s and p50/p95/p99 for `/search` against preloaded catalogues
(10k and 100k flat, 1M HNSW) and for `/index`, with micro-batching on (the
defaults) and off (LOOKALIKE_BATCH_MAX_SIZE=1). Then start-up time to ready and
resident memory (VmRSS from /proc) with 100k and 1M items, each service started
cold (after `sync` and dropping the page cache, which needs root) and then warm
(right after), with the steps the server logs (index, TensorFlow import, model).

Cold starts on a virtual machine also pay for memory the host has taken back:
with free page reporting (virtio-balloon), memory that sat free for a minute
costs ~3-4 s per GB to touch again on the 2-core VM these figures come from,
against ~0.3 s, and a 1M x 128 start touches ~2.5 GB (its own 1.2 GB and the
page cache it reads). Runs that leave such memory free before a start (a long
load phase, other jobs) measure that too.

Catalogues are written before a server starts, straight through
`app.local_catalog.LocalCatalog` (the service's own write path: SQLite, index,
snapshot) with clustered unit vectors standing in for embeddings, and cached
under --work-dir, so a rerun skips building them. The load-test model is
models/default (trained with `python -m training train` when missing; if the
trainer fails, a small contract-conforming CNN built here). Memory is measured
with 128-dimensional catalogues and an untrained CNN of that output size:
memory and start-up do not depend on the weights.

    .venv/bin/python -m benchmarks.service            # the full run: ~1 h on 2 cores, once
    .venv/bin/python -m benchmarks.service --quick    # small catalogues, short runs, no write

Writes its section of benchmarks/RESULTS.md (see benchmarks/results.py).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.results import run_lines, update_section, versions
from benchmarks.search import parse_sizes, size_label
from benchmarks.vectors import clustered_unit_vectors

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BOUNDARY = "lookalike-bench-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
UNIQUE = "@@UNIQUE@@"  # benchmarks.load replaces it per request


# inputs ----------------------------------------------------------------------


def query_jpeg(side: int) -> bytes:
    """A photo-like JPEG (smooth shapes and noise), the same bytes every run."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side] / side
    pixels = np.stack(
        [
            128 + 100 * np.sin(6 * x + 3 * y),
            128 + 100 * np.cos(5 * y - 2 * x),
            128 + 80 * np.sin(9 * x * y),
        ],
        axis=-1,
    )
    pixels += rng.normal(0, 12, pixels.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=85)
    return out.getvalue()


def multipart(image: bytes, fields: dict[str, str]) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="q.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + image
        + b"\r\n"
    ]
    for name, value in fields.items():
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def write_cnn_model(path: Path, dim: int, image_size: tuple[int, int] = (32, 32)) -> Path:
    """A model directory to the contract: Keras' own layers, untrained, L2-normalised output."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    height, width = image_size
    inputs = keras.Input(shape=(None, None, 3))
    x = keras.layers.Resizing(height, width)(inputs)
    x = keras.layers.Rescaling(1 / 255)(x)
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(dim)(x)
    outputs = keras.layers.UnitNormalization()(x)
    path.mkdir(parents=True, exist_ok=True)
    encoder = path / "encoder.keras"
    keras.Model(inputs, outputs).save(encoder)
    meta = {
        "format_version": 1,
        "model_id": hashlib.sha256(encoder.read_bytes()).hexdigest(),
        "image_size": [height, width],
        "embedding_dim": dim,
        "metric": "cosine",
        "match_threshold": 0.9,
        "preprocessing": {"resize": "bilinear", "fit": "stretch"},
        "provenance": {"dataset": "none (benchmark stand-in)", "loss": "none", "epochs": 0},
        "evaluation": {},
    }
    (path / "model.json").write_text(json.dumps(meta, indent=2))
    return path


def load_test_model(work: Path, log: list[str]) -> Path:
    """A copy of models/default (trained if missing; a stand-in CNN if the trainer fails).

    The copy keeps the run consistent if models/default is retrained meanwhile,
    and the catalogues cached for it stay valid for as long as it is kept.
    """
    default = ROOT / "models" / "default"
    if not (default / "model.json").exists():
        print("models/default is missing: training it (python -m training train)", flush=True)
        result = subprocess.run(
            [PYTHON, "-m", "training", "train", "--out", str(default)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if result.returncode != 0 or not (default / "model.json").exists():
            print(result.stderr[-2000:], file=sys.stderr)
            log.append(
                "the trainer failed, so the load tests used a stand-in CNN (untrained, 64-d)"
            )
            return write_cnn_model(work / "model-cnn64", 64)
        log.append("models/default was trained by this run (`python -m training train`)")
    model_id = json.loads((default / "model.json").read_text())["model_id"]
    copy = work / f"model-default-{model_id[:12]}"
    if not (copy / "model.json").exists():
        shutil.copytree(default, copy, dirs_exist_ok=True)
    return copy


# catalogues ------------------------------------------------------------------


def model_info(model_dir: Path) -> Any:
    from app.model_bundle import read_model_info

    return read_model_info(model_dir)


def catalogue(work: Path, model_dir: Path, n: int, index_type: str) -> Path:
    """A data directory holding n items for this model, built once and cached."""
    from app.catalog import NewItem
    from app.config import Settings
    from app.local_catalog import LocalCatalog

    info = model_info(model_dir)
    data = work / f"{index_type}-{size_label(n)}-{info.embedding_dim}d-{info.model_id[:12]}"
    if index_type == "hnsw":  # a graph built with less would be rebuilt at every start
        data = data.with_name(
            f"{data.name}-efc{Settings.model_fields['hnsw_ef_construction'].default}"
        )
    if (data / "ready.json").exists():
        return data
    shutil.rmtree(data, ignore_errors=True)
    print(f"writing catalogue {data.name}", flush=True)
    started = time.perf_counter()
    vectors, _ = clustered_unit_vectors(n, info.embedding_dim, seed=7)
    settings = Settings(
        _env_file=None,
        model_dir=model_dir,
        data_dir=data,
        index_type=index_type,
        snapshot_every=10**9,  # one snapshot, at close
    )
    catalog = LocalCatalog(settings, model_id=info.model_id, embedding_dim=info.embedding_dim)
    try:
        for start in range(0, n, 10_000):
            catalog.upsert(
                [
                    NewItem(
                        id=f"item-{i}",
                        embedding=vectors[i],
                        metadata={"category": f"c{i % 20}"},
                    )
                    for i in range(start, min(n, start + 10_000))
                ]
            )
    finally:
        catalog.close()
    np.save(data / "vectors.npy", vectors)  # what the naive server loads, tutorial style
    took = time.perf_counter() - started
    (data / "ready.json").write_text(json.dumps({"items": n, "seconds": took}))
    print(f"  {n} items in {took:.0f} s", flush=True)
    return data


# servers ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    startup_s: float

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the server and its child processes have used so far."""
        total = 0
        for pid in process_tree(self.process.pid):
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(stat[11]) + int(stat[12])
        return total / os.sysconf("SC_CLK_TCK")

    def memory_mb(self) -> dict[str, float]:
        """The server's memory with its child processes (the embedding worker among them).

        VmRSS: proportional set size summed over the processes, so pages they
        share (the worker is forked) count once. VmHWM: the processes' peaks
        summed, an upper bound.
        """
        fields = {"VmRSS": 0.0, "VmHWM": 0.0}
        for pid in process_tree(self.process.pid):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        fields["VmRSS"] += int(line.split()[1]) / 1024
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    name, _, value = line.partition(":")
                    if name == "VmHWM":
                        fields["VmHWM"] += int(value.split()[0]) / 1024
        return fields


def process_tree(root: int) -> list[int]:
    """`root` and every process descended from it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(stat[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


@contextlib.contextmanager
def serve(name: str, command: list[str], env: dict[str, str], log: Path) -> Iterator[Server]:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    full_env.update(
        {"LOOKALIKE_HOST": "127.0.0.1", "LOOKALIKE_PORT": str(port), "TF_CPP_MIN_LOG_LEVEL": "2"}
    )
    full_env.update(env)
    cmd = [c.replace("{port}", str(port)) for c in command]
    started = time.perf_counter()
    with log.open("ab") as out:
        process = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=out)
    try:
        deadline = started + 600
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{name} not ready after 600 s; see {log}")
            time.sleep(0.02)
        yield Server(name, process, port, time.perf_counter() - started)
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def lookalike(
    model_dir: Path,
    data: Path,
    *,
    index_type: str = "flat",
    batching: bool = True,
    ef_search: int | None = None,
) -> tuple[list[str], dict]:
    env = {
        "LOOKALIKE_MODEL_DIR": str(model_dir),
        "LOOKALIKE_DATA_DIR": str(data),
        "LOOKALIKE_INDEX_TYPE": index_type,
    }
    if not batching:
        env["LOOKALIKE_BATCH_MAX_SIZE"] = "1"
    if ef_search is not None:
        env["LOOKALIKE_HNSW_EF_SEARCH"] = str(ef_search)
    return [PYTHON, "-m", "app", "serve"], env


def naive(model_dir: Path, data: Path) -> tuple[list[str], dict]:
    command = [PYTHON, "-m", "benchmarks.naive_server", "--model-dir", str(model_dir)]
    return [*command, "--vectors", str(data / "vectors.npy"), "--port", "{port}"], {}


def floor() -> tuple[list[str], dict]:
    return [PYTHON, "-m", "benchmarks.http_floor", "--port", "{port}"], {}


# A second 1M HNSW server at a higher efSearch, to show what more recall costs in latency.
OTHER_EF_SEARCH = 128
OTHER_EF_NAME = f"lookalike, efSearch {OTHER_EF_SEARCH}"
OTHER_EF_RECALL = "efSearch 128, recall@10 1.000 at 1M x 64 in benchmarks/hnsw_params.py"

# load ------------------------------------------------------------------------


@dataclass
class Contender:
    name: str
    catalogue: str
    command: tuple[list[str], dict[str, str]]


@dataclass
class Result:
    group: str
    server: str
    catalogue: str
    endpoint: str
    clients: int
    rps: float
    p50: float
    p95: float
    p99: float
    errors: int


def load_once(
    server: Server,
    endpoint: str,
    body: Path,
    clients: int,
    seconds: float,
    args: argparse.Namespace,
) -> tuple[np.ndarray, float, int]:
    """One bounded load run from a separate process: (latencies ms, seconds measured, errors)."""
    out_file = args.work / "latencies.npy"
    command = [
        PYTHON,
        "-m",
        "benchmarks.load",
        "--port",
        str(server.port),
        "--path",
        endpoint,
        "--body",
        str(body),
        "--content-type",
        CONTENT_TYPE,
        "--clients",
        str(clients),
        "--warmup",
        str(args.warmup),
        "--duration",
        str(seconds),
        "--latencies-out",
        str(out_file),
    ]
    out = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=True, timeout=seconds + 120
    )
    r = json.loads(out.stdout)
    if r["errors"]:
        print(f"    {server.name}: {r['errors']} errors {r['statuses']} {r['first_error']}")
    return np.load(out_file), float(r["seconds"]), int(r["errors"])


def load_group(
    group: str, contenders: list[Contender], endpoint: str, body: Path, args: argparse.Namespace
) -> list[Result]:
    """Every contender's servers up at once, measured in alternating slices per client count.

    On a machine shared with other work the background load drifts; taking each
    server's figure from several short slices interleaved with the others'
    makes the ratios between them fair, which back-to-back runs are not.
    """
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(serve(c.name, *c.command, log=args.work / "servers.log"))
            for c in contenders
        ]
        for clients in args.client_counts:
            latencies: list[list[np.ndarray]] = [[] for _ in servers]
            seconds = [0.0 for _ in servers]
            errors = [0 for _ in servers]
            for _ in range(args.rounds):
                for i, server in enumerate(servers):
                    ms, took, failed = load_once(
                        server, endpoint, body, clients, args.duration / args.rounds, args
                    )
                    latencies[i].append(ms)
                    seconds[i] += took
                    errors[i] += failed
            for i, c in enumerate(contenders):
                ms = np.concatenate(latencies[i])
                p50, p95, p99 = np.percentile(ms, [50, 95, 99]) if len(ms) else [np.nan] * 3
                r = Result(
                    group,
                    c.name,
                    c.catalogue,
                    endpoint,
                    clients,
                    len(ms) / seconds[i],
                    float(p50),
                    float(p95),
                    float(p99),
                    errors[i],
                )
                results.append(r)
                print(
                    f"  {c.name:<26} {c.catalogue:<9} {endpoint:<8} {clients:>3} clients "
                    f"{r.rps:8.1f} req/s  p50 {r.p50:8.2f}  p95 {r.p95:8.2f}  "
                    f"p99 {r.p99:8.2f} ms",
                    flush=True,
                )
    return results


# start-up and memory ---------------------------------------------------------

# What the server logs about its own start-up (app/local_catalog.py, app/encoder.py).
STEP_PATTERNS = {
    "index": re.compile(r"index ready: .* in ([0-9.]+) s$"),
    "TensorFlow import": re.compile(r"TensorFlow imported in ([0-9.]+) s"),
    "Keras model": re.compile(r"model loaded and warmed up in ([0-9.]+) s"),
    "LiteRT conversion": re.compile(r"to LiteRT in ([0-9.]+) s"),
    "embedding worker": re.compile(r"embedding worker \d+ ready in ([0-9.]+) s"),
}


def drop_page_cache() -> bool:
    """Write dirty pages back and empty the page cache (root only); whether it happened.

    A start right after is a cold start: the interpreter, TensorFlow's
    libraries, the catalogue and the snapshot all come from the disk.
    """
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


@dataclass
class Footprint:
    what: str
    items: int
    dim: int
    index: str
    cache: str
    startup_s: float
    cpu_s: float
    steps: dict[str, float]
    rss_ready_mb: float
    rss_searched_mb: float
    hwm_mb: float


def startup_steps(log_text: str) -> dict[str, float]:
    """Seconds of each start-up step the server logged (missing steps left out)."""
    steps: dict[str, float] = {}
    for line in log_text.splitlines():
        for name, pattern in STEP_PATTERNS.items():
            if match := pattern.search(line):
                steps[name] = float(match.group(1))
    return steps


def footprint(
    what: str,
    model_dir: Path,
    data: Path,
    items: int,
    index: str,
    search_body: bytes,
    *,
    cold: bool,
) -> Footprint:
    """Start a server, time it to ready, search 100 times, read its memory.

    cold: empty the page cache first (as root; otherwise the row says the cache
    was as found). A warm start is one made right after another start of the
    same catalogue, so its files are cached.
    """
    info = model_info(model_dir)
    command, env = lookalike(model_dir, data, index_type=index)
    cache = "warm"
    if cold:
        cache = "cold (page cache dropped)" if drop_page_cache() else "as found (not root)"
    log = data.parent / "servers.log"
    log.touch()
    offset = log.stat().st_size
    with serve(what, command, env, log=log) as server:
        cpu = server.cpu_s()
        ready = server.memory_mb()
        for _ in range(100):
            request = urllib.request.Request(
                f"http://127.0.0.1:{server.port}/search",
                data=search_body,
                headers={"Content-Type": CONTENT_TYPE},
            )
            with urllib.request.urlopen(request, timeout=60) as r:
                r.read()
        after = server.memory_mb()
    with log.open("rb") as f:
        f.seek(offset)
        steps = startup_steps(f.read().decode(errors="replace"))
    row = Footprint(
        what,
        items,
        info.embedding_dim,
        index,
        cache,
        server.startup_s,
        cpu,
        steps,
        ready["VmRSS"],
        after["VmRSS"],
        after["VmHWM"],
    )
    print(
        f"  {what:<40} {cache.split()[0]:<5} start-up {row.startup_s:6.2f} s "
        f"(CPU {cpu:.2f} s; {steps_text(steps)})  RSS ready {row.rss_ready_mb:7.0f} MiB  "
        f"after searches {row.rss_searched_mb:7.0f} MiB  peak {row.hwm_mb:7.0f} MiB",
        flush=True,
    )
    return row


def cold_and_warm(
    what: str,
    model_dir: Path,
    data: Path,
    items: int,
    index: str,
    search_body: bytes,
    *,
    before_each: Callable[[], None] = lambda: None,
) -> list[Footprint]:
    """The same server started twice: from a dropped page cache, then again right after."""
    rows = []
    for cold in (True, False):
        before_each()
        rows.append(footprint(what, model_dir, data, items, index, search_body, cold=cold))
    return rows


def steps_text(steps: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f}" for name, seconds in steps.items()) or "-"


def converted(model_dir: Path, data: Path) -> Path:
    """`data` holding the model's LiteRT conversion, as after the service's first start there.

    The footprint rows measure the starts a deployed service makes; the first
    one, which converts encoder.keras, has a row of its own.
    """
    from app.config import Settings
    from app.model_runtime import prepare_runtime

    prepare_runtime(
        model_info(model_dir), Settings(_env_file=None, model_dir=model_dir, data_dir=data)
    )
    return data


def with_litert(model_dir: Path) -> Path:
    """A copy of `model_dir` with the exporter's LiteRT file, as the trainer writes it now.

    The same encoder.keras, so the same model_id: it serves the catalogues
    built for `model_dir`.
    """
    copy = model_dir.with_name(f"{model_dir.name}-with-litert")
    if not (copy / "encoder.tflite").is_file():
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(model_dir, copy)
        subprocess.run(
            [sys.executable, "-m", "training", "litert", "--model", str(copy)],
            check=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
    return copy


def unconverted(data: Path) -> Path:
    """`data` without its LiteRT conversion, as the first start of a new model finds it."""
    shutil.rmtree(data / "litert", ignore_errors=True)
    return data


def empty_catalogue(work: Path, model_dir: Path, index: str) -> Path:
    info = model_info(model_dir)
    data = work / f"{index}-empty-{info.embedding_dim}d-{info.model_id[:12]}"
    shutil.rmtree(data, ignore_errors=True)
    return data


# report ----------------------------------------------------------------------


def find(
    results: list[Result],
    server: str,
    catalogue: str,
    endpoint: str,
    clients: int,
    group: str | None = None,
) -> Result:
    wanted = (server, catalogue, endpoint, clients)
    for r in results:
        if (r.server, r.catalogue, r.endpoint, r.clients) == wanted and group in (None, r.group):
            return r
    raise KeyError((server, catalogue, endpoint, clients, group))


def load_table(results: list[Result]) -> str:
    lines = [
        "| measured together | server | catalogue | endpoint | clients | req/s | p50 ms | p95 ms "
        "| p99 ms | errors |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.group} | {r.server} | {r.catalogue} | `{r.endpoint}` | {r.clients} "
            f"| {r.rps:,.1f} | {r.p50:.2f} | {r.p95:.2f} | {r.p99:.2f} | {r.errors} |"
        )
    return "\n".join(lines)


def footprint_table(rows: list[Footprint]) -> str:
    lines = [
        "| service | items | dim | index | page cache | start-up to ready s | CPU s to ready "
        "| of which, logged by the server (s) | RSS ready MiB | RSS after 100 searches MiB "
        "| peak RSS MiB |",
        "|---|---:|---:|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for f in rows:
        lines.append(
            f"| {f.what} | {f.items:,} | {f.dim} | {f.index} | {f.cache} | {f.startup_s:.2f} "
            f"| {f.cpu_s:.2f} | {steps_text(f.steps)} | {f.rss_ready_mb:.0f} "
            f"| {f.rss_searched_mb:.0f} | {f.hwm_mb:.0f} |"
        )
    return "\n".join(lines)


def targets(
    results: list[Result], feet: list[Footprint], small: str, sizes: list[str], large: str
) -> str:
    rows = ["| target | measured | verdict |", "|---|---|---|"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    for size in sizes:
        floor_16 = find(results, "HTTP floor", "-", "/search", 16, group=size)
        ours = find(results, "lookalike", size, "/search", 16)
        base = find(results, "naive", size, "/search", 16)
        ratio = ours.rps / base.rps
        rows.append(
            f"| `/search` {size}, 16 clients: >= 10x naive req/s, lower p99 "
            f"| {ours.rps:,.0f} vs {base.rps:,.0f} req/s ({ratio:.1f}x); "
            f"p99 {ours.p99:.1f} vs {base.p99:.1f} ms "
            f"| {verdict(ratio >= 10 and ours.p99 < base.p99)} |"
        )
        share = ours.rps / floor_16.rps
        rows.append(
            f"| `/search` {size}, 16 clients: >= 60% of the HTTP floor's req/s "
            f"| {ours.rps:,.0f} vs {floor_16.rps:,.0f} req/s ({share:.0%}) "
            f"| {verdict(share >= 0.6)} |"
        )
    little = find(results, "lookalike", small, "/search", 1)
    from app.config import Settings

    default_ef = Settings.model_fields["hnsw_ef_search"].default
    for name, setting in (
        ("lookalike", f"default efSearch {default_ef}"),
        (OTHER_EF_NAME, OTHER_EF_RECALL),
    ):
        big = find(results, name, f"{large} HNSW", "/search", 1)
        rows.append(
            f"| `/search` p50 at {large} (HNSW, {setting}) within 1.2x of {small} (flat), "
            f"1 client | {big.p50:.2f} vs {little.p50:.2f} ms ({big.p50 / little.p50:.2f}x) "
            f"| {verdict(big.p50 <= 1.2 * little.p50)} |"
        )
    many = [c for c in sorted({r.clients for r in results}) if c >= 16]
    for size in sizes:
        on = [find(results, "lookalike", size, "/search", c) for c in many]
        off = [find(results, "lookalike, batching off", size, "/search", c) for c in many]
        on1 = find(results, "lookalike", size, "/search", 1)
        off1 = find(results, "lookalike, batching off", size, "/search", 1)
        raised = all(a.rps > b.rps for a, b in zip(on, off, strict=True))
        rates = "; ".join(
            f"{a.rps:,.0f} vs {b.rps:,.0f} req/s at {c}"
            for a, b, c in zip(on, off, many, strict=True)
        )
        rows.append(
            f"| micro-batching ({size}): more `/search` req/s at 16+ clients, "
            f"1-client p50 up by <= 1 ms | {rates}; 1-client p50 {on1.p50:.2f} vs "
            f"{off1.p50:.2f} ms | {verdict(raised and on1.p50 - off1.p50 <= 1.0)} |"
        )
    # Memory is judged on the warm rows (the page cache does not change what
    # the process holds); start-up on every row, cold and warm.
    empties = {(f.dim, f.index): f for f in feet if f.items == 0 and f.cache == "warm"}
    for f in feet:
        if f.items < 1_000_000:
            continue
        if f.cache == "warm":
            empty = empties[(f.dim, f.index)]
            raw = f.items * f.dim * 4 / 2**20
            allowed = empty.rss_searched_mb + 1.5 * raw
            rows.append(
                f"| {f.what}: RSS <= 1.5 x raw vectors ({raw:.0f} MiB) + model "
                f"(empty service {empty.rss_searched_mb:.0f} MiB) = {allowed:.0f} MiB "
                f"| {f.rss_searched_mb:.0f} MiB (peak {f.hwm_mb:.0f}) "
                f"| {verdict(f.rss_searched_mb <= allowed)} |"
            )
        rows.append(
            f"| {f.what}, page cache {f.cache}: start-up to ready < 10 s "
            f"| {f.startup_s:.1f} s (CPU {f.cpu_s:.1f} s; {steps_text(f.steps)}) "
            f"| {verdict(f.startup_s < 10)} |"
        )
    return "\n".join(rows)


# main ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10k,100k", help="flat catalogues for /search load")
    parser.add_argument("--large", default="1M", help="HNSW catalogue and memory/start-up size")
    parser.add_argument("--clients", default="1,4,16,64", help="concurrent clients")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds discarded per slice")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved slices per server and client count"
    )
    parser.add_argument("--image-side", type=int, default=256, help="query JPEG side in pixels")
    parser.add_argument(
        "--work-dir", type=Path, default=ROOT / "data" / "bench-service", help="cached catalogues"
    )
    parser.add_argument("--quick", action="store_true", help="1k/5k/20k items, 2 s runs, no write")
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.large, args.clients = "1k,5k", "20k", "1,16"
        args.duration, args.warmup, args.rounds, args.no_write = 2.0, 0.5, 2, True
    args.client_counts = [int(c) for c in args.clients.split(",")]
    if 16 not in args.client_counts or 1 not in args.client_counts:
        parser.error("--clients must include 1 and 16 (the targets are stated there)")
    sizes = parse_sizes(args.sizes)
    large = parse_sizes(args.large)[0]
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.work = work
    started = time.time()
    busy = os.getloadavg()
    notes: list[str] = []

    model_dir = load_test_model(work, notes)
    info = model_info(model_dir)
    image = query_jpeg(args.image_side)
    scratch_bodies = tempfile.TemporaryDirectory(prefix="bodies-", dir=work)
    bodies = Path(scratch_bodies.name)
    search_body = multipart(image, {"k": "10"})
    (bodies / "search.bin").write_bytes(search_body)
    (bodies / "index.bin").write_bytes(multipart(image, {"id": f"new-{UNIQUE}"}))

    data = {n: converted(model_dir, catalogue(work, model_dir, n, "flat")) for n in sizes}
    big = converted(model_dir, catalogue(work, model_dir, large, "hnsw"))
    model128 = work / "model-cnn128"
    if not (model128 / "model.json").exists():
        write_cnn_model(model128, 128)
    memory_sizes = sorted({100_000 if not args.quick else sizes[-1], large})
    data128 = {n: catalogue(work, model128, n, "flat") for n in memory_sizes}

    results: list[Result] = []
    search, index = bodies / "search.bin", bodies / "index.bin"

    def copy_of(data: Path, name: str) -> Path:
        """A scratch copy: one process owns a data directory, and writes must not stick."""
        scratch = work / f"scratch-{name}"
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(data, scratch, ignore=shutil.ignore_patterns("*.lock", "vectors.npy"))
        return scratch

    print("load", flush=True)
    for n in sizes:
        label = size_label(n)
        group = [
            Contender("lookalike", label, lookalike(model_dir, data[n])),
            Contender(
                "lookalike, batching off",
                label,
                lookalike(model_dir, copy_of(data[n], "off"), batching=False),
            ),
            Contender("naive", label, naive(model_dir, data[n])),
            Contender("HTTP floor", "-", floor()),
        ]
        if n == sizes[0]:
            big_label = f"{size_label(large)} HNSW"
            group[1:1] = [
                Contender("lookalike", big_label, lookalike(model_dir, big, index_type="hnsw")),
                Contender(
                    OTHER_EF_NAME,
                    big_label,
                    lookalike(
                        model_dir, copy_of(big, "ef"), index_type="hnsw", ef_search=OTHER_EF_SEARCH
                    ),
                ),
            ]
        results += load_group(label, group, "/search", search, args)
    shutil.rmtree(work / "scratch-ef", ignore_errors=True)
    smallest = data[sizes[0]]
    label = size_label(sizes[0])
    group = [
        Contender("lookalike", label, lookalike(model_dir, copy_of(smallest, "on"))),
        Contender(
            "lookalike, batching off",
            label,
            lookalike(model_dir, copy_of(smallest, "off"), batching=False),
        ),
        Contender("naive", label, naive(model_dir, smallest)),
        Contender("HTTP floor", "-", floor()),
    ]
    results += load_group(f"{label} /index", group, "/index", index, args)
    for name in ("on", "off"):
        shutil.rmtree(work / f"scratch-{name}", ignore_errors=True)

    print("start-up and memory", flush=True)
    search128 = multipart(image, {"k": "10"})
    feet = [
        footprint(
            f"{size_label(large)} x 128, flat, first start of a model exported with its "
            "LiteRT file (checks it)",
            with_litert(model128),
            unconverted(data128[large]),
            large,
            "flat",
            search128,
            cold=True,
        ),
        footprint(
            f"{size_label(large)} x 128, flat, first start of a model exported without a "
            "LiteRT file (converts it)",
            model128,
            unconverted(data128[large]),
            large,
            "flat",
            search128,
            cold=True,
        ),
    ]
    empty128 = converted(model128, empty_catalogue(work, model128, "flat"))
    feet += cold_and_warm("empty catalogue", model128, empty128, 0, "flat", search128)
    for n in memory_sizes:
        feet += cold_and_warm(
            f"{size_label(n)} x 128, flat",
            model128,
            converted(model128, data128[n]),
            n,
            "flat",
            search128,
        )
    rebuild = data128[large]

    def forget_snapshot() -> None:
        for name in ("index.faiss", "index.json"):
            (rebuild / name).unlink(missing_ok=True)

    feet += cold_and_warm(
        f"{size_label(large)} x 128, flat, no snapshot (rebuilt from SQLite)",
        model128,
        rebuild,
        large,
        "flat",
        search128,
        before_each=forget_snapshot,
    )
    feet += cold_and_warm(
        "empty catalogue",
        model_dir,
        converted(model_dir, empty_catalogue(work, model_dir, "hnsw")),
        0,
        "hnsw",
        search_body,
    )
    feet += cold_and_warm(
        f"{size_label(large)} x {info.embedding_dim}, HNSW",
        model_dir,
        converted(model_dir, big),
        large,
        "hnsw",
        search_body,
    )
    scratch_bodies.cleanup()

    small_label = size_label(sizes[0])
    report = "\n\n".join(
        [
            load_table(results),
            "Start-up (process start to the first 200 from `/readyz`) and resident memory. "
            "Each service is started twice: cold, right after `sync` and dropping the page "
            "cache (as root), then warm, right after. CPU s is what the server process used "
            "until ready: far below the wall time, it waited for the disk or for cores other "
            "work held. The steps are the server's own log lines (the rest is the "
            "interpreter, imports and uvicorn):",
            footprint_table(feet),
            "Targets from issue 6 that this run measures:",
            targets(results, feet, small_label, [size_label(n) for n in sizes], size_label(large)),
        ]
    )
    print(report)
    if not args.no_write:
        body = "\n".join(
            [
                "## HTTP service under load (`benchmarks/service.py`)",
                "",
                *run_lines("benchmarks.service", started, busy),
                "- versions: "
                + versions(
                    "tensorflow-cpu",
                    "keras",
                    "ai-edge-litert",
                    "faiss-cpu",
                    "fastapi",
                    "uvicorn",
                    "numpy",
                    "scikit-learn",
                    "pillow",
                ),
                "- model: "
                + (
                    "`models/default` as it was at the start (copied aside) "
                    if model_dir.name.startswith("model-default-")
                    else "a stand-in CNN "
                )
                + f"({info.image_size[0]}x{info.image_size[1]} input, {info.embedding_dim}-d, "
                f"id {info.model_id[:12]}); memory rows use an untrained {128}-d CNN of the "
                "same kind",
                f"- query: one {args.image_side}x{args.image_side} JPEG "
                f"({len(image):,} bytes) as multipart `file` (+ `k=10`, or a fresh `id` per "
                "`/index` request); catalogues of clustered unit vectors (benchmarks/vectors.py) "
                "written through LocalCatalog",
                f"- load: benchmarks/load.py in its own process, closed loop, one keep-alive "
                f"connection per client, {args.warmup:g} s warm-up then {args.duration:g} s "
                "measured per level, on the same cores as the server",
                "- lookalike: `python -m app serve` with defaults (flat index, micro-batching "
                "up to 32, no extra wait) unless the row says otherwise; naive: "
                "benchmarks/naive_server.py; HTTP floor: benchmarks/http_floor.py",
                *[f"- {n}" for n in notes],
                "",
                report,
            ]
        )
        update_section("service", body)
    print(f"done in {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
