"""Cost of one image through the service's decoding and model paths, one thread, no load.

Decoding: the benchmark's query JPEG through Pillow (`images.decode_image` at
the draft scale + `to_model_input`). The model: models/default (or a stand-in
CNN when it is missing) through TensorFlow (`app.encoder`) and through its
LiteRT conversion (`app.model_runtime`), at batch 1, 8 and 32.
Then a batch of 8 uploads decoded and embedded on this thread
(`InlineEmbedder`) and in the embedding worker process (`EmbedWorker`), whose
difference is what a batch pays to cross the process boundary.

    .venv/bin/python -m benchmarks.embedding [--repeats 200] [--no-write]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.results import machine, update_section, versions
from benchmarks.service import ROOT, query_jpeg, write_cnn_model


def per_call_ms(call: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, 10th percentile) wall milliseconds of `call`, after a warm-up."""
    for _ in range(max(3, repeats // 10)):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), float(np.percentile(times, 10))


def model_dir(scratch: Path) -> tuple[Path, str]:
    default = ROOT / "models" / "default"
    if (default / "model.json").exists():
        return default, "models/default"
    return write_cnn_model(scratch / "cnn64", 64), "a stand-in CNN (models/default is missing)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--image-side", type=int, default=256)
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from app.config import Settings
    from app.embed_worker import BatchEmbedder, EmbedWorker, InlineEmbedder, Upload
    from app.encoder import Encoder
    from app.image_preparer import ImagePreparer
    from app.images import decode_image, to_model_input
    from app.model_bundle import read_model_info
    from app.model_runtime import EmbeddingModel, LiteRtModel, prepare_runtime

    scratch = Path(tempfile.mkdtemp(prefix="bench-embedding-"))
    path, described = model_dir(scratch)
    info = read_model_info(path)
    settings = Settings(_env_file=None, model_dir=path, data_dir=scratch / "data", threads=2)
    height, width = info.image_size
    data = query_jpeg(args.image_side)
    draft = (2 * width, 2 * height)
    limit = settings.max_image_pixels
    rows: list[str] = []

    def pillow() -> np.ndarray:
        image = decode_image(data, max_pixels=limit, draft_size=draft)
        return to_model_input(image, info.image_size)

    median, fast = per_call_ms(pillow, args.repeats * 5)
    rows.append(f"| decode + resize | Pillow | 1 | {median:.3f} | {fast:.3f} | {median:.3f} |")

    keras = Encoder(info, threads=1)  # imports TensorFlow, so the conversion is timed alone
    started = time.perf_counter()
    spec = prepare_runtime(info, settings)
    converted_s = time.perf_counter() - started
    assert spec.litert_path is not None, "the model was not converted to LiteRT"
    lite = LiteRtModel(spec.litert_path, info, threads=spec.threads)
    rng = np.random.default_rng(0)
    gaps = []
    for batch in (1, 8, 32):
        images = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
        gaps.append(float(np.max(np.abs(keras.embed(images) - lite.embed(images)))))
        models: list[tuple[str, EmbeddingModel]] = [
            ("TensorFlow", keras),
            ("LiteRT (XNNPACK)", lite),
        ]
        for name, model in models:
            median, fast = per_call_ms(functools.partial(model.embed, images), args.repeats)
            rows.append(
                f"| model | {name} | {batch} | {median:.3f} | {fast:.3f} | {median / batch:.3f} |"
            )

    uploads = [Upload(data) for _ in range(8)]
    inline = InlineEmbedder(ImagePreparer(info, settings), lite)
    worker = EmbedWorker(spec, settings)
    try:
        embedders: list[tuple[str, BatchEmbedder]] = [
            ("on this thread", inline),
            ("in the worker process", worker),
        ]
        for name, embedder in embedders:
            median, fast = per_call_ms(functools.partial(embedder, uploads), args.repeats)
            rows.append(
                f"| decode + model, 8 uploads | {name} | 8 | {median:.3f} | {fast:.3f} "
                f"| {median / 8:.3f} |"
            )
    finally:
        worker.close()

    table = "\n".join(
        [
            "| step | path | images | median ms | p10 ms | median ms per image |",
            "|---|---|---:|---:|---:|---:|",
            *rows,
        ]
    )
    report = "\n".join(
        [
            "## Embedding one image: decoding and the model (`benchmarks/embedding.py`)",
            "",
            f"- command: `.venv/bin/python -m benchmarks.embedding --repeats {args.repeats}`",
            f"- machine: {machine()}",
            "- versions: " + versions("tensorflow-cpu", "keras", "ai-edge-litert", "pillow"),
            f"- model: {described} ({height}x{width} input, {info.embedding_dim}-d, "
            f"id {info.model_id[:12]}), {spec.threads} thread (the service's share of 2 cores)",
            f"- image: the service benchmark's {args.image_side}x{args.image_side} query JPEG "
            f"({len(data):,} bytes)",
            f"- LiteRT conversion (loading encoder.keras, converting, checking against Keras; "
            f"TensorFlow already imported): {converted_s:.2f} s; largest difference from Keras "
            "per embedding component at batch "
            + ", ".join(f"{b}: {g:.1e}" for b, g in zip((1, 8, 32), gaps, strict=True)),
            "",
            table,
        ]
    )
    print(report)
    if not args.no_write:
        update_section("embedding", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
