"""`python -m training report` and `train --log-neighbours`: pictures people can read.

One tiny model (16x16 digits, two short epochs, logging neighbour grids) is
trained for the module; the report is drawn on a 150-image subset of its
held-out digits, and once more on a small folder of images.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_search_page import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.test_training import TINY
from tests.test_training_data import numbered_source, write_folder
from training.cli import main
from training.datasets import split
from training.plots import CELL, GRID_HEADER, OTHER, QUERY_GAP, SAME
from training.report import held_out_images, nearest_match_confusion
from training.samples import spread_queries, stratified_sample

pytestmark = pytest.mark.slow

LOGGED_QUERIES = 4
REPORT_K = 3
REPORT_QUERIES = 5
SUBSET = 150
MIN_PIXEL_STD = 8.0
"""A blank or single-colour figure has a pixel standard deviation near 0; real ones 30+."""


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "digits"
    schedule = ["--epochs", "2", "--steps-per-epoch", "10", "--seed", "0"]
    code = main(["train", "--out", str(out), *TINY, *schedule, "--log-neighbours", "4"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def report(logged_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reports") / "digits"
    args = ["--k", str(REPORT_K), "--queries", str(REPORT_QUERIES), "--max-images", str(SUBSET)]
    code = main(["report", "--model", str(logged_model), "--out", str(out), *args, "--quiet"])
    assert code == 0
    return out


def assert_readable_png(path: Path, size: tuple[int, int]) -> np.ndarray:
    assert path.is_file(), path
    with Image.open(path) as image:
        assert image.format == "PNG", path
        assert image.size == size, path
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.std() > MIN_PIXEL_STD, f"{path} looks blank"
    return pixels


def colour_pixels(pixels: np.ndarray, colour: str) -> int:
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float32)
    return int((np.abs(pixels - target).max(axis=-1) < 12).sum())


def test_log_neighbours_writes_one_grid_per_epoch(logged_model: Path) -> None:
    epochs = json.loads((logged_model / "model.json").read_text())["provenance"]["epochs"]
    grids = sorted((logged_model / "neighbours").glob("*.png"))
    # Epoch 0 is the untrained encoder, the starting point of the film.
    assert [g.name for g in grids] == [f"epoch-{e:03d}.png" for e in range(epochs + 1)]
    size = (6 * CELL + QUERY_GAP, GRID_HEADER + LOGGED_QUERIES * CELL)
    for grid in grids:
        pixels = assert_readable_png(grid, size)
        assert colour_pixels(pixels, SAME) + colour_pixels(pixels, OTHER) > 1000


def test_every_picture_is_a_png_of_its_declared_size(report: Path) -> None:
    pictures = json.loads((report / "report.json").read_text())["pictures"]
    names = {p["file"] for p in pictures}
    expected = {
        "projection-pca.png",
        "projection-tsne.png",
        "neighbours.png",
        "thresholds.png",
        "confusion.png",
        "training.png",
    }
    assert expected <= names
    assert {f"training-neighbours/epoch-{e:03d}.png" for e in range(3)} <= names
    assert names == {p.relative_to(report).as_posix() for p in report.rglob("*.png")}
    for picture in pictures:
        assert picture["width"] >= 400
        assert picture["height"] >= 300
        assert_readable_png(report / picture["file"], (picture["width"], picture["height"]))
    grid = next(p for p in pictures if p["file"] == "neighbours.png")
    assert (grid["width"], grid["height"]) == (
        (REPORT_K + 1) * CELL + QUERY_GAP,
        GRID_HEADER + REPORT_QUERIES * CELL,
    )


def test_neighbour_grids_frame_right_green_and_wrong_red(report: Path) -> None:
    with Image.open(report / "neighbours.png") as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert colour_pixels(pixels, SAME) > 1000
    mistakes = report / "neighbours-mistakes.png"
    if mistakes.exists():  # a tiny model still makes some
        with Image.open(mistakes) as image:
            assert colour_pixels(np.asarray(image.convert("RGB"), dtype=np.float32), OTHER) > 500


def test_index_html_shows_every_picture_and_embeds_the_projection(report: Path) -> None:
    page = (report / "index.html").read_text(encoding="utf-8")
    for picture in json.loads((report / "report.json").read_text())["pictures"]:
        assert picture["file"] in page
    images = re.findall(r'<img [^>]*src="([^"]+\.png)" width="(\d+)" height="(\d+)"', page)
    assert images
    for source, width, height in images:
        with Image.open(report / source) as image:
            assert image.size == (int(width), int(height)), source
    # Nothing loaded from outside the folder: no remote or absolute references.
    assert not re.search(r'(src|href)="(https?:|//|/)', page)
    assert "<link" not in page
    match = re.search(r'<script type="application/json" id="points-data">(.*?)</script>', page)
    assert match
    points = json.loads(match.group(1))
    count = len(points["x"])
    assert 10 <= count <= SUBSET
    for key in ("y", "label", "nearest", "score", "thumb"):
        assert len(points[key]) == count
    assert all(uri.startswith("data:image/png;base64,") for uri in points["thumb"])
    assert points["classes"] == [str(d) for d in range(10)]
    assert 'id="scatter"' in page


def test_projection_answers_hover_click_and_legend_offline(report: Path) -> None:
    """The page's own script in Chromium, from file://, with every other request refused."""
    from playwright.sync_api import Route, sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with scripts/system-deps (as root)")
    outside: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1300, "height": 900})
            tab.set_default_timeout(10_000)

            def only_local(route: Route) -> None:
                if route.request.url.startswith(("file:", "data:")):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            tab.route("**/*", only_local)
            tab.on("pageerror", lambda error: problems.append(str(error)))
            tab.goto((report / "index.html").as_uri())
            dots = tab.locator("#scatter circle")
            assert dots.count() == SUBSET
            # Dots may overlap, and a pointer reaches the topmost: use dots that
            # are on top at their own centre (which ones depends on the training).
            free = tab.evaluate(
                """() => Array.from(document.querySelectorAll("#scatter circle"))
                .map((c, i) => [c, i])
                .filter(([c]) => {
                  const r = c.getBoundingClientRect();
                  return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === c;
                })
                .map(([, i]) => i)"""
            )
            assert len(free) >= 3
            first, second, third = (dots.nth(i) for i in free[:3])
            first.hover()
            assert (tab.locator("#info-img").get_attribute("src") or "").startswith(
                "data:image/png"
            )
            assert tab.locator("#info-text").inner_text().startswith("class ")
            second.click()
            pinned = tab.locator("#info-text").inner_text()
            third.hover()
            assert tab.locator("#info-text").inner_text() == pinned  # a click pins it
            tab.locator("#legend li").first.click()
            dimmed = tab.locator("#scatter circle.dim").count()
            assert 0 < dimmed < SUBSET
            tab.locator("#epoch").fill("0")
            assert (tab.locator("#epoch-img").get_attribute("src") or "").endswith("epoch-000.png")
            ARTIFACTS.mkdir(exist_ok=True)
            tab.screenshot(path=str(ARTIFACTS / "report-page.png"), full_page=True)
        finally:
            browser.close()
    assert not outside, outside
    assert not problems, problems


def test_confusion_matrix_counts_weak_matches_as_no_match(report: Path) -> None:
    summary = json.loads((report / "report.json").read_text())
    confusion = summary["confusion"]
    assert confusion["columns"] == [*confusion["rows"], "no match"]
    counts = np.array(confusion["counts"])
    assert counts.shape == (10, 11)
    assert counts.sum() == summary["images"] == SUBSET
    labels = np.array([0, 0, 1, 1])
    counts = nearest_match_confusion(
        labels, np.array([0, 1, 1, 0]), np.array([0.9, 0.8, 0.2, 0.7]), threshold=0.5, classes=2
    )
    assert counts.tolist() == [[1, 1, 0], [1, 0, 1]]


def test_report_on_a_folder_reads_pictures_from_files(logged_model: Path, tmp_path: Path) -> None:
    data = write_folder(tmp_path / "photos", classes=3, per_class=8, corrupt=False)
    out = tmp_path / "report"
    code = main(["report", "--model", str(logged_model), "--data", str(data), "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "report.json").read_text())
    assert summary["classes"] == ["class_0", "class_1", "class_2"]
    assert summary["images"] == 12  # other data than the model's: half of each class
    for picture in summary["pictures"]:
        assert_readable_png(out / picture["file"], (picture["width"], picture["height"]))


def test_report_on_a_missing_model_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["report", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert code == 2
    assert "not a model directory" in capsys.readouterr().err


def test_samples_keep_every_class_and_spread_queries_over_classes() -> None:
    labels = np.array([0] * 50 + [1] * 10 + [2] * 3)
    chosen = stratified_sample(labels, 20, seed=1)
    assert len(chosen) == 20
    assert set(labels[chosen]) == {0, 1, 2}
    queries = spread_queries(labels, 3, seed=1)
    assert sorted(labels[queries]) == [0, 1, 2]
    assert list(spread_queries(labels, 3, seed=1)) == list(queries)


def test_held_out_images_put_unseen_classes_after_the_seen_ones() -> None:
    labels = np.repeat(np.arange(10), 12)
    splits = split(numbered_source(labels), holdout_classes=3, validation_classes=2, seed=4)
    images, names = held_out_images(splits)
    assert names == tuple("01234789")  # 5 and 6 validated on, neither trained nor reported
    assert images.images is not None
    pixels = images.images.astype(int)
    source_ids = pixels[:, 0, 0, 0] + 256 * pixels[:, 0, 0, 1]
    assert [names[label] for label in images.labels] == [str(labels[i]) for i in source_ids]
    assert len(images) == len(splits.test) + 3 * 12
