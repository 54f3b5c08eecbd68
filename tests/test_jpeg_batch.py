"""JPEG searches decoded inside the model call get exactly Pillow's pixels (app/jpeg_batch.py)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app.batcher import Forward, MicroBatcher
from app.config import Settings
from app.embedding import ImagePreparer
from app.encoder import Encoder, import_tensorflow
from app.errors import InvalidImage
from app.images import plan_jpeg
from app.jpeg_batch import JpegBatch, graph_decoder, input_signature
from app.model_bundle import ModelInfo, read_model_info
from app.pillow_resample import PRECISION_BITS, apply, bilinear_weights, resize_plan
from app.pipeline import EmbedJob, EncoderStage, SearchJob, SearchOptions

# Not square, so a swapped height and width shows.
SIZE = (24, 32)


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour gradients and noise: what JPEG's subsampling and DCT scaling act on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    pixels = np.stack(
        [
            128 + 100 * np.sin(6 * x + 3 * y + seed),
            128 + 100 * np.cos(5 * y - 2 * x),
            128 + 80 * np.sin(9 * x * y),
        ],
        axis=-1,
    )
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def jpeg(
    width: int,
    height: int,
    *,
    seed: int = 0,
    mode: str = "RGB",
    subsampling: int = 2,
    progressive: bool = False,
    orientation: int | None = None,
) -> bytes:
    image = photo(width, height, seed).convert(mode)
    options: dict[str, Any] = {"quality": 85, "progressive": progressive}
    if mode == "RGB":
        options["subsampling"] = subsampling
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif
    out = io.BytesIO()
    image.save(out, "JPEG", **options)
    return out.getvalue()


CASES: dict[str, bytes] = {
    "photo 1/4 scale": jpeg(256, 256),
    "odd size, 1/2 scale": jpeg(257, 131, seed=1),
    "huge, 1/8 scale": jpeg(1200, 900, seed=2),
    "smaller than the model": jpeg(20, 30, seed=3),
    "4:4:4": jpeg(200, 120, seed=4, subsampling=0),
    "4:2:2": jpeg(200, 120, seed=5, subsampling=1),
    "progressive": jpeg(300, 200, seed=6, progressive=True),
    "greyscale": jpeg(150, 100, seed=7, mode="L"),
    **{f"EXIF orientation {o}": jpeg(180, 100, seed=10 + o, orientation=o) for o in range(1, 9)},
}


@pytest.fixture(scope="module")
def preparer(tmp_path_factory: pytest.TempPathFactory) -> ImagePreparer:
    model = ModelInfo(
        path=Path("unused"), model_id="m", image_size=SIZE, embedding_dim=8, match_threshold=0.9
    )
    settings = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("data"))
    return ImagePreparer(model, settings)


@pytest.fixture(scope="module")
def tiny(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Encoder, ImagePreparer]:
    """The tiny test model's encoder, with the JPEG graph, and its preparer."""
    model = read_model_info(model_dir)
    settings = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("tiny"))
    return Encoder(model, threads=1, decode_jpegs=True), ImagePreparer(model, settings)


def encoder_stage(tiny: tuple[Encoder, ImagePreparer], on_batch: Any = None) -> EncoderStage:
    """An encoder stage whose searches are forwarded nowhere (the Forward is the answer)."""
    encoder, preparer = tiny
    index_stage: MicroBatcher[Any, Any] = MicroBatcher(lambda jobs: [], max_batch=1, max_wait_s=0)
    return EncoderStage(preparer, encoder.embed, index_stage, plan_jpegs=True, on_batch=on_batch)


@pytest.fixture(scope="module")
def decode_graph() -> Any:
    tf = import_tensorflow(2)
    return tf.function(graph_decoder(tf, SIZE), input_signature=input_signature(tf, SIZE))


@pytest.mark.parametrize("name", list(CASES))
def test_the_graph_decodes_a_jpeg_to_pillows_pixels_exactly(
    name: str, preparer: ImagePreparer, decode_graph: Any
) -> None:
    data = CASES[name]
    plan = preparer.plan(data)
    assert plan is not None
    decoded = decode_graph(*JpegBatch.of([plan], SIZE).arrays()).numpy()
    np.testing.assert_array_equal(decoded[0], preparer.prepare(data).pixels)


def test_one_batch_of_differently_sized_jpegs_matches_pillow_image_by_image(
    preparer: ImagePreparer, decode_graph: Any
) -> None:
    datas = list(CASES.values())
    plans = [preparer.plan(data) for data in datas]
    assert all(plan is not None for plan in plans)
    decoded = decode_graph(*JpegBatch.of(plans, SIZE).arrays()).numpy()  # type: ignore[arg-type]
    expected = np.stack([preparer.prepare(data).pixels for data in datas])
    np.testing.assert_array_equal(decoded, expected)


def test_orientations_turn_the_image_upright_before_resizing(preparer: ImagePreparer) -> None:
    sideways = preparer.plan(jpeg(180, 100, orientation=6))
    upright = preparer.plan(jpeg(180, 100, orientation=1))
    assert sideways is not None
    assert upright is not None
    assert (sideways.orientation, upright.orientation) == (6, 1)
    # Weights act on the upright image: 100 x 180 once turned (too narrow for a
    # draft scale), where the upright file decodes at half size, 90 x 50.
    assert sideways.resize.horizontal.shape[1] == 100
    assert sideways.resize.vertical.shape[1] == 180
    assert (upright.scale, upright.resize.horizontal.shape[1]) == (2, 90)


def test_what_the_graph_does_not_reproduce_is_left_to_pillow(preparer: ImagePreparer) -> None:
    png = io.BytesIO()
    photo(64, 64).save(png, "PNG")
    cmyk = io.BytesIO()
    photo(64, 64).convert("CMYK").save(cmyk, "JPEG")
    assert preparer.plan(png.getvalue()) is None
    assert preparer.plan(cmyk.getvalue()) is None
    assert preparer.plan(b"\xff\xd8\xff\xe0 not really a JPEG") is None
    assert preparer.plan(b"%PDF-1.4") is None
    big = jpeg(400, 300)
    assert plan_jpeg(big, max_pixels=400 * 300 - 1, draft_size=(64, 48), size=SIZE) is None
    assert plan_jpeg(big, max_pixels=400 * 300, draft_size=(64, 48), size=SIZE) is not None


def test_weights_are_pillows_fixed_point_bilinear_filter() -> None:
    weights = bilinear_weights(100, 32)
    assert weights.shape == (32, 100)
    # Each row sums to one in 22-bit fixed point, give or take rounding of its taps.
    assert np.all(np.abs(weights.sum(axis=1) - (1 << PRECISION_BITS)) <= weights.shape[1])
    # Shrinking widens the filter: about 2 * 100/32 taps per output pixel.
    assert set((weights > 0).sum(axis=1)) <= {5, 6, 7}
    np.testing.assert_array_equal(bilinear_weights(7, 7), np.eye(7) * (1 << PRECISION_BITS))


@pytest.mark.parametrize(
    ("in_size", "out_size"),
    [((64, 64), (32, 24)), ((125, 94), (32, 32)), ((31, 40), (32, 32)), ((750, 500), (28, 28)),
     ((64, 128), (32, 32)), ((17, 19), (32, 24)), ((300, 32), (32, 32))],
)  # fmt: skip
def test_a_resize_plan_reproduces_pillow_on_images_it_was_not_probed_with(
    in_size: tuple[int, int], out_size: tuple[int, int]
) -> None:
    plan = resize_plan(in_size, out_size)
    assert plan is not None
    rng = np.random.default_rng(99)
    for _ in range(3):
        image = rng.integers(0, 256, (in_size[1], in_size[0], 3), dtype=np.uint8)
        expected = np.asarray(Image.fromarray(image).resize(out_size, Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(apply(plan, image), expected)


def test_no_plan_where_the_probes_cannot_tell_the_pass_orders_apart() -> None:
    # Stretching a one-pixel column agrees either way round on every probe.
    assert resize_plan((1, 3), (2, 1)) is None


def test_a_jpeg_libjpeg_refuses_fails_only_its_own_search(
    tiny: tuple[Encoder, ImagePreparer],
) -> None:
    """The graph call fails for the batch; Pillow then decodes it and names the bad upload."""
    encoder, preparer = tiny
    good = jpeg(64, 64, seed=1)
    broken = good[: len(good) // 2]  # the header is whole, the scan is cut off
    assert preparer.plan(broken) is not None
    stage = encoder_stage(tiny)
    pixels = preparer.prepare(jpeg(40, 40, seed=2)).pixels[None]
    outcomes = stage([SearchJob(broken, SearchOptions(3)), SearchJob(good, SearchOptions(3)),
                      EmbedJob(pixels)])  # fmt: skip
    assert isinstance(outcomes[0], InvalidImage)
    assert isinstance(outcomes[1], Forward)
    expected = encoder.embed(np.stack([preparer.prepare(good).pixels, pixels[0]]))
    np.testing.assert_array_equal(outcomes[1].job.vector, expected[0])
    np.testing.assert_array_equal(outcomes[2], expected[1:])


def test_planned_and_pillow_decoded_searches_embed_identically(
    tiny: tuple[Encoder, ImagePreparer],
) -> None:
    encoder, preparer = tiny
    datas = [CASES["photo 1/4 scale"], CASES["EXIF orientation 6"], CASES["greyscale"]]
    plans = [preparer.plan(data) for data in datas]
    pixels = np.stack([preparer.prepare(data).pixels for data in datas])
    in_graph = encoder.embed(pixels[:0], plans)  # type: ignore[arg-type]
    np.testing.assert_array_equal(in_graph, encoder.embed(pixels))


def test_a_lone_search_is_decoded_by_pillow_and_two_in_the_graph(
    tiny: tuple[Encoder, ImagePreparer],
) -> None:
    calls: list[tuple[int, int]] = []
    stage = encoder_stage(tiny, lambda images, in_model: calls.append((images, in_model)))
    search = SearchJob(jpeg(64, 64), SearchOptions(3))
    lone = stage([search])
    pair = stage([search, search])
    assert calls == [(1, 0), (2, 2)]
    assert isinstance(lone[0], Forward)
    assert isinstance(pair[1], Forward)
    np.testing.assert_array_equal(lone[0].job.vector, pair[1].job.vector)
