"""The encoder as the service runs it: LiteRT by default, TensorFlow where LiteRT cannot.

encoder.keras is the contract, but TensorFlow is a heavy way to run a small CNN
a batch at a time: the bundled model takes 0.5-0.8 ms an image at batch 8 and
1.0-1.5 ms alone through a traced TensorFlow function on the 2-core benchmark
machine, and 0.25-0.3 ms either way through LiteRT's XNNPACK kernels
(benchmarks/RESULTS.md, "Embedding one image"). So the service runs a LiteRT
conversion: the exporter's encoder.tflite, checked with LiteRT against the
embeddings Keras gave its probe images, or, for a model exported without one,
a conversion of its own, checked against Keras on a probe batch. Either is
kept under the data directory. The service's own conversion runs in a child
process, so the service never imports TensorFlow unless it serves with it. A
model the converter refuses, or whose conversion disagrees with Keras, runs on
TensorFlow, as does everything with `LOOKALIKE_MODEL_RUNTIME=tensorflow`.

The two runtimes agree to about 1e-7 per embedding component (float32 rounding
in a different order), far below anything a similarity score shows.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from app.config import Settings
from app.model_bundle import ExportedLiteRt, ModelInfo, file_sha256
from app.native_logs import silenced_stderr

log = logging.getLogger("lookalike.model")

Runtime = Literal["litert", "tensorflow"]

# Largest difference per embedding component between the converted model and
# Keras on the probe batch; float32 reordering gives about 1e-7.
AGREEMENT = 1e-4
PROBE_SEED = 20261207


class EmbeddingModel(Protocol):
    """uint8 images [N, H, W, 3] -> float32 [N, D] L2-normalised embeddings."""

    def embed(self, images: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RuntimeSpec:
    """How a process loads the model; picklable, so the embedding worker gets the same one."""

    runtime: Runtime
    info: ModelInfo
    threads: int
    litert_path: Path | None = None


class LiteRtModel:
    """A converted model run by LiteRT's interpreter (XNNPACK); one call at a time.

    The interpreter's input is resized to each batch's size when it changes,
    which costs about 0.1 ms, far less than padding batches to fixed sizes.
    """

    def __init__(self, path: Path, info: ModelInfo, *, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.info = info
        self._batch = -1
        self._lock = threading.Lock()
        with silenced_stderr():  # the delegate is made, and announced, on the first call
            self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self._input = self._interpreter.get_input_details()[0]["index"]
            self._output = self._interpreter.get_output_details()[0]["index"]
            out = self.embed(np.zeros((1, *info.image_size, 3), dtype=np.uint8))
        if out.shape != (1, info.embedding_dim):
            raise ValueError(
                f"{path} outputs {out.shape[1:]} per image, model.json says {info.embedding_dim}"
            )

    def embed(self, images: np.ndarray) -> np.ndarray:
        if not len(images):
            return np.zeros((0, self.info.embedding_dim), dtype=np.float32)
        images = np.ascontiguousarray(images, dtype=np.uint8)
        with self._lock:
            if len(images) != self._batch:
                self._interpreter.resize_tensor_input(self._input, list(images.shape))
                self._interpreter.allocate_tensors()
                self._batch = len(images)
            self._interpreter.set_tensor(self._input, images)
            self._interpreter.invoke()
            out: np.ndarray = self._interpreter.get_tensor(self._output)
        # XNNPACK normalises an all-zero vector to NaN (0/0) where Keras'
        # UnitNormalization gives zeros: an all-black image through a head
        # without bias does it, and NaN must not reach the index.
        return np.nan_to_num(out, copy=False, nan=0.0)


def load_model(spec: RuntimeSpec) -> EmbeddingModel:
    """The model `spec` describes, loaded in this process (the worker's, or the service's)."""
    if spec.runtime == "litert" and spec.litert_path is not None:
        return LiteRtModel(spec.litert_path, spec.info, threads=spec.threads)
    from app.encoder import Encoder

    return Encoder(spec.info, threads=spec.threads)


def prepare_runtime(info: ModelInfo, settings: Settings) -> RuntimeSpec:
    """The runtime for `info`: a LiteRT model from the cache, the exporter's, converted now, or TF.

    Only a cache miss on a model exported without a LiteRT file (or with one
    that fails its check) imports TensorFlow, to convert: in a process of its
    own unless this one has TensorFlow already; a few seconds, once per model
    and library versions.
    """
    from app.encoder import serving_threads

    threads = serving_threads(settings.thread_count)
    if settings.model_runtime == "tensorflow":
        return RuntimeSpec("tensorflow", info, threads)
    path = litert_cache_path(settings.data_dir, info)
    refused = path.with_suffix(".refused")
    if path.is_file():
        return RuntimeSpec("litert", info, threads, path)
    if info.litert is not None:
        adopted = _adopt_exported(info, info.litert, path, threads)
        if adopted is not None:
            return RuntimeSpec("litert", info, threads, adopted)
    if refused.is_file():
        log.warning("serving %s on TensorFlow: %s", info.model_id[:12], refused.read_text().strip())
        return RuntimeSpec("tensorflow", info, threads)
    started = time.perf_counter()
    if "tensorflow" in sys.modules:  # already paid for here: no second import elsewhere
        reason, path = _convert_where_possible(info, path, threads, AGREEMENT)
        permanent = True
    else:
        reason, path, permanent = _convert_in_child(info, path, threads)
    if reason is not None:
        log.warning("serving %s on TensorFlow: %s", info.model_id[:12], reason)
        if permanent:
            with contextlib.suppress(OSError):
                _write_atomically(refused, reason.encode())
        return RuntimeSpec("tensorflow", info, threads)
    log.info(
        "converted %s to LiteRT in %.2f s: %s",
        info.model_id[:12],
        time.perf_counter() - started,
        path,
    )
    return RuntimeSpec("litert", info, threads, path)


def _adopt_exported(
    info: ModelInfo, exported: ExportedLiteRt, cache: Path, threads: int
) -> Path | None:
    """The exporter's LiteRT file, checked and copied into the cache; None if it fails its check.

    The check runs the file on its probe with LiteRT alone, a few milliseconds,
    so a model exported with its conversion never costs a start the
    TensorFlow import. A file that fails is left alone and encoder.keras is
    converted as if the exporter had not written one.
    """
    reason = _check_exported(info, exported, threads)
    if reason is not None:
        log.warning("not using %s: %s; converting encoder.keras instead", exported.path, reason)
        return None
    try:
        _write_atomically(cache, exported.path.read_bytes())
    except OSError as exc:
        log.warning("cannot cache the LiteRT model in %s (%s)", cache.parent, exc)
        cache = exported.path
    log.info("serving %s with the exporter's LiteRT file: %s", info.model_id[:12], cache)
    return cache


def _check_exported(info: ModelInfo, exported: ExportedLiteRt, threads: int) -> str | None:
    """Why the exporter's LiteRT file must not be served, or None when it embeds as Keras did."""
    if exported.model_id != info.model_id:
        return f"it was converted from model {exported.model_id[:12]}, not this encoder.keras"
    try:
        if file_sha256(exported.path) != exported.sha256:
            return "its sha256 differs from model.json's"
        with np.load(exported.probe_path) as probe:
            images, expected = probe["images"], probe["embeddings"]
        got = LiteRtModel(exported.path, info, threads=threads).embed(images)
    except Exception as exc:  # a missing, truncated or foreign file: all mean "convert"
        return f"{type(exc).__name__}: {exc}"
    if got.shape != expected.shape:
        return f"it embeds the probe as {got.shape}, the probe says {expected.shape}"
    gap = float(np.max(np.abs(got - expected), initial=0.0))
    if not gap <= AGREEMENT:
        return f"it differs from Keras on its probe by {gap:.2e} (more than {AGREEMENT})"
    return None


def prepare_for_serving(info: ModelInfo, settings: Settings) -> str:
    """Convert now what the service's next start would, and say what it will run.

    The offline commands that bring a catalogue to a model (import, reindex)
    have TensorFlow loaded already, so converting there costs about a second,
    against 5-10 s of a cold start spent importing TensorFlow to convert.
    """
    spec = prepare_runtime(info, settings)
    if spec.runtime == "litert":
        return f"the service will run model {info.model_id[:12]} with LiteRT ({spec.litert_path})"
    return f"the service will run model {info.model_id[:12]} with TensorFlow"


def _convert_in_child(info: ModelInfo, path: Path, threads: int) -> tuple[str | None, Path, bool]:
    """Convert in a process of its own: (why not, where it went, whether that is final).

    Converting means importing TensorFlow, which would stay in the service
    for good: ~550 MiB more resident memory, for a model the service then runs
    with LiteRT. A converter that crashes takes only its own process down;
    its model is served by TensorFlow this time and converted again next start.
    A process that has TensorFlow already (an online reindex, or tests)
    converts in place: a child would import it again, 3-8 s.
    """
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from app.child_process import child_context

    try:
        with ProcessPoolExecutor(1, mp_context=child_context()) as converter:
            reason, path, records = converter.submit(
                _convert_and_report, info, path, threads, AGREEMENT
            ).result()
    except BrokenProcessPool as exc:
        return f"the LiteRT converter's process died ({exc})", path, False
    for level, message in records:
        log.log(level, "converter: %s", message)
    return reason, path, True


def _convert_and_report(
    info: ModelInfo, path: Path, threads: int, agreement: float
) -> tuple[str | None, Path, list[tuple[int, str]]]:
    """The converter process's work; its log lines go back to the service with the answer."""
    recorder = _Recorder()
    logger = logging.getLogger("lookalike")
    logger.addHandler(recorder)
    logger.setLevel(logging.INFO)
    reason, path = _convert_where_possible(info, path, threads, agreement)
    return reason, path, recorder.records


def _convert_where_possible(
    info: ModelInfo, path: Path, threads: int, agreement: float
) -> tuple[str | None, Path]:
    """Convert to `path`, or for this run only when its directory is read-only."""
    try:
        return convert_to_litert(info, path, threads=threads, agreement=agreement), path
    except OSError as exc:
        log.warning("cannot cache the LiteRT model in %s (%s)", path.parent, exc)
        path = Path(tempfile.mkdtemp(prefix="lookalike-litert-")) / path.name
        return convert_to_litert(info, path, threads=threads, agreement=agreement), path


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage()))


def litert_cache_path(data_dir: Path, info: ModelInfo) -> Path:
    """Where the converted model lives, named for what made it.

    The model_id is encoder.keras's hash; the converter's and the runtime's
    versions are in the name too, so an upgrade of either converts again.
    """
    converter = _version("tensorflow-cpu") or _version("tensorflow") or "none"
    runtime = _version("ai-edge-litert") or "none"
    name = f"{info.model_id}-tf{converter}-litert{runtime}.tflite"
    return data_dir / "litert" / name


def convert_to_litert(info: ModelInfo, path: Path, *, threads: int, agreement: float) -> str | None:
    """Convert encoder.keras, check it against Keras, and write it to `path`.

    Returns why the model must stay on TensorFlow, or None when `path` holds
    a LiteRT model that agrees with Keras.
    """
    from app.encoder import Encoder

    encoder = Encoder(info, threads=threads)
    try:
        flatbuffer = encoder.to_litert()
    except Exception as exc:  # the converter's errors are many and unnamed
        return f"the LiteRT converter refused encoder.keras ({type(exc).__name__}: {exc})"
    staging = path.with_name(f"{path.stem}.{os.getpid()}.checking")
    _write_atomically(staging, flatbuffer)
    try:
        converted = LiteRtModel(staging, info, threads=threads)
        probe = probe_images(*info.image_size)
        gap = float(np.max(np.abs(converted.embed(probe) - encoder.embed(probe))))
    except Exception as exc:
        staging.unlink(missing_ok=True)
        return f"LiteRT could not run the converted model ({type(exc).__name__}: {exc})"
    if not gap <= agreement:
        staging.unlink(missing_ok=True)
        return f"the converted model differs from Keras by {gap:.2e} (more than {agreement})"
    os.replace(staging, path)
    return None


def probe_images(height: int, width: int) -> np.ndarray:
    """Flat, graded, sharp-edged and noisy images to check a conversion on.

    The same set as the exporter's probe (training/litert.py; the two halves
    share no code): noise alone keeps every activation in a middle range.
    """
    rows = np.repeat(np.linspace(0, 255, height)[:, None], width, axis=1)
    cols = np.repeat(np.linspace(0, 255, width)[None, :], height, axis=0)
    squares = (np.add.outer(np.arange(height) // 4, np.arange(width) // 4) % 2) * 255.0
    planes = [
        (np.zeros_like(rows),) * 3,
        (np.full_like(rows, 255),) * 3,
        (np.full_like(rows, 128),) * 3,
        (cols,) * 3,
        (rows, 255 - rows, np.full_like(rows, 64)),
        (squares,) * 3,
    ]
    shapes = np.rint(np.stack([np.stack(p, axis=-1) for p in planes])).astype(np.uint8)
    noise = np.random.default_rng(PROBE_SEED).integers(
        0, 256, size=(2, height, width, 3), dtype=np.uint8
    )
    return np.concatenate([shapes, noise])


def _write_atomically(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all, even beside another process writing it too.

    Replicas sharing a data directory may convert the same model at once.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
