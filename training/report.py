"""`python -m training report`: the pictures people judge an embedding by.

Figures say how well an encoder retrieves; pictures say why: which classes are
entangled, what its mistakes look like, what the match threshold trades. The
report draws them from the images `evaluate` measures (on the data the model
trained on, its own held-out images and unseen classes; on other data, half of
each class), at most `max_images` of them, and writes PNG files, report.json
(the numbers behind them) and one index.html that needs nothing but its folder.

"Nearest match" here is leave-one-out among those held-out images: each one is
a query against all the others, as the service would answer it from a
catalogue of them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.datasets import DataError, DataSource, ImageSet, Splits, load_source, split
from training.samples import spread_queries, stratified_sample

if TYPE_CHECKING:
    from training.plots import Picture

DEFAULT_K = 5
DEFAULT_QUERIES = 8
DEFAULT_MAX_IMAGES = 2_000
"""t-SNE and the page's thumbnails grow with every image; 2,000 draws in seconds."""
INTERACTIVE_POINTS = 1_000
"""Points (and thumbnails) embedded in index.html, which stays around 1-3 MB."""
DISPLAY_MAX_SIDE = 96
NO_MATCH = "no match"
REPORT_JSON = "report.json"
EPOCH_GRIDS = "training-neighbours"


@dataclass(frozen=True)
class ReportOptions:
    """The command's choices; the CLI takes its defaults from here (this module imports
    nothing heavy at the top, so `--help` stays instant)."""

    k: int = DEFAULT_K
    queries: int = DEFAULT_QUERIES
    max_images: int = DEFAULT_MAX_IMAGES
    holdout_classes: int | None = None
    seed: int | None = None
    progress: bool = True


def model_splits(
    meta: dict[str, Any], source: DataSource, holdout_classes: int | None, seed: int | None
) -> tuple[Splits, int]:
    """The split `evaluate` measures on, and its seed: the same rule as `run_evaluate`.

    On the data the model trained on, exactly the images it held out at
    export; on other data, half of each class.
    """
    provenance = meta.get("provenance", {})
    settings = provenance.get("split", {}) if provenance.get("dataset") == source.name else {}
    holdout = (
        holdout_classes if holdout_classes is not None else int(settings.get("holdout_classes", 0))
    )
    seed = seed if seed is not None else int(settings.get("seed", 0))
    splits = split(
        source,
        holdout_classes=holdout,
        validation_classes=len(settings.get("validation_classes", [])),
        test_fraction=float(settings.get("test_fraction", 0.5)),
        validation_fraction=float(settings.get("validation_fraction", 0.0)),
        seed=seed,
    )
    return splits, seed


def held_out_images(splits: Splits) -> tuple[ImageSet, tuple[str, ...]]:
    """Test images of the seen classes and every image of the unseen ones, in one label space."""
    parts = [splits.test]
    names = list(splits.train_classes)
    if splits.unseen is not None and len(splits.unseen):
        _, relabelled = np.unique(splits.unseen.labels, return_inverse=True)
        parts.append(splits.unseen.relabelled(relabelled.reshape(-1) + len(names)))
        names += splits.unseen_classes
    labels = np.concatenate([p.labels for p in parts])
    if all(p.images is not None for p in parts):
        return ImageSet(labels, images=np.concatenate([p.images for p in parts])), tuple(names)
    paths = tuple(path for p in parts for path in (p.paths or ()))
    return ImageSet(labels, paths=paths), tuple(names)


def display_pixels(images: ImageSet, image_size: tuple[int, int]) -> np.ndarray:
    """uint8 images as the encoder sees them, shrunk to at most DISPLAY_MAX_SIDE for drawing."""
    from training.image_files import resize_array
    from training.image_folder import FileReader

    scale = min(1.0, DISPLAY_MAX_SIDE / max(image_size))
    size = (max(1, round(image_size[0] * scale)), max(1, round(image_size[1] * scale)))
    if images.images is not None:
        return np.stack([resize_array(image, size) for image in images.images])
    assert images.paths is not None
    reader = FileReader(images.paths, size)
    return np.stack([reader.read(i) for i in range(len(images))])


def nearest_match_confusion(
    labels: np.ndarray,
    nearest_labels: np.ndarray,
    nearest_scores: np.ndarray,
    threshold: float,
    classes: int,
) -> np.ndarray:
    """counts[query class, nearest match's class]; the last column counts "no match".

    A nearest match scoring below the threshold is what the service reports as
    no match, so it is counted there rather than as a right or wrong class.
    """
    predicted = np.where(nearest_scores >= threshold, nearest_labels, classes)
    counts = np.zeros((classes, classes + 1), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def entangled_pairs(
    counts: np.ndarray, class_names: tuple[str, ...], limit: int = 10
) -> list[dict[str, Any]]:
    """The most frequent (query class -> other class) nearest matches, worst first."""
    wrong = counts[:, :-1].copy()
    np.fill_diagonal(wrong, 0)
    totals = counts.sum(axis=1)
    pairs = []
    for flat in np.argsort(-wrong, axis=None, kind="stable")[:limit]:
        row, column = np.unravel_index(flat, wrong.shape)
        if wrong[row, column] == 0:
            break
        pairs.append(
            {
                "query_class": class_names[row],
                "matched_class": class_names[column],
                "count": int(wrong[row, column]),
                "share": float(wrong[row, column] / max(totals[row], 1)),
            }
        )
    return pairs


def _copy_epoch_grids(model_dir: Path, out: Path) -> list[Picture]:
    """The grids `train --log-neighbours` left in the model directory, copied beside the page."""
    from PIL import Image

    from training.plots import Picture

    found = sorted((model_dir / "neighbours").glob("epoch-*.png"))
    target = out / EPOCH_GRIDS
    shutil.rmtree(target, ignore_errors=True)
    copied = []
    for source in found:
        target.mkdir(parents=True, exist_ok=True)
        path = Path(shutil.copyfile(source, target / source.name))
        with Image.open(path) as image:
            width, height = image.size
        copied.append(Picture(path, width, height, f"epoch {int(source.stem.split('-')[1])}"))
    return copied


def build_report(model_dir: Path, data: str, out: Path, options: ReportOptions) -> dict[str, Any]:
    """Write every picture, report.json and index.html into `out`; returns report.json."""
    import keras

    from training import plots
    from training.calibration import class_pair_scores, threshold_curve
    from training.evaluate import TRAINED, UNTRAINED, Embedder, compare, evaluation_sets
    from training.export import HISTORY_JSON, read_model_json
    from training.metrics import nearest_neighbours
    from training.projection import TITLES, preferred, projections
    from training.report_html import Page, Section, interactive_points, write_page

    meta = read_model_json(model_dir)
    image_size = (int(meta["image_size"][0]), int(meta["image_size"][1]))
    source = load_source(data, image_size=image_size, progress=options.progress)
    splits, seed = model_splits(meta, source, options.holdout_classes, options.seed)
    images, class_names = held_out_images(splits)
    images = images.subset(stratified_sample(images.labels, options.max_images, seed))
    labels = images.labels
    if len(images) < 3 or len(np.unique(labels)) < 2:
        raise DataError(f"{data}: too few held-out images or classes to report on")
    encoder = keras.saving.load_model(model_dir / "encoder.keras", compile=False)
    embedder = Embedder(image_size)
    evaluation = compare(
        {TRAINED: encoder, UNTRAINED: keras.models.clone_model(encoder)},
        evaluation_sets(splits),
        embedder,
        probe_train=splits.train,
        seed=seed,
    )
    embeddings = embedder.embed(encoder, images)
    shown = display_pixels(images, image_size)
    threshold = float(meta["match_threshold"])
    scores, ids = nearest_neighbours(
        embeddings, embeddings, min(options.k, len(images) - 1), exclude_self=True
    )
    out.mkdir(parents=True, exist_ok=True)
    sections: list[Section] = []
    described = f"{len(images)} held-out images of {len(np.unique(labels))} classes"

    points = projections(embeddings, seed)
    sections.append(
        Section(
            "2-D projections",
            "Each dot a held-out image, coloured by class. Classes that overlap here "
            "are the ones the encoder confuses; t-SNE and UMAP keep neighbourhoods, PCA "
            "keeps global distances.",
            [
                plots.projection_figure(
                    xy,
                    labels,
                    class_names,
                    out / f"projection-{name}.png",
                    title=f"{TITLES[name]} of {described}",
                )
                for name, xy in points.items()
            ],
        )
    )
    queries = spread_queries(labels, options.queries, seed)
    grids = [
        plots.neighbour_grid(
            shown,
            labels,
            class_names,
            queries,
            ids[queries],
            scores[queries],
            out / "neighbours.png",
            title=f"queries and their top {ids.shape[1]} neighbours",
            threshold=threshold,
        )
    ]
    wrong = np.flatnonzero(labels[ids[:, 0]] != labels)
    if wrong.size:
        worst = wrong[np.argsort(-scores[wrong, 0], kind="stable")][: options.queries]
        grids.append(
            plots.neighbour_grid(
                shown,
                labels,
                class_names,
                worst,
                ids[worst],
                scores[worst],
                out / "neighbours-mistakes.png",
                title=f"the most confident mistakes ({wrong.size} of {len(images)} "
                "queries have another class first)",
                threshold=threshold,
            )
        )
    sections.append(
        Section(
            "Nearest neighbours",
            "Each row a query (blue) and its nearest neighbours among the other held-out "
            "images, best first, with their cosine similarity.",
            grids,
        )
    )
    calibration: dict[str, float] = {}
    try:
        curve = threshold_curve(*class_pair_scores(embeddings, labels, seed=seed))
    except ValueError:
        curve = None
    if curve is not None:
        best = int(np.flatnonzero(curve["f1"] == curve["f1"].max())[-1])
        calibration = {"best_f1": float(curve["f1"][best])}
        calibration["best_f1_threshold"] = float(curve["thresholds"][best])
        sections.append(
            Section(
                "Match threshold",
                f"Same-class against different-class pairs of these images, as many of each "
                f"(the pairs match_threshold is calibrated on). match_threshold "
                f"{threshold:.4f}; F1 here peaks at {calibration['best_f1']:.4f} "
                f"for thresholds just below {calibration['best_f1_threshold']:.4f}.",
                [
                    plots.threshold_figure(
                        curve,
                        threshold,
                        out / "thresholds.png",
                        title=f"{int(curve['recall'].size)} operating points over {described}",
                    )
                ],
            )
        )
    counts = nearest_match_confusion(
        labels, labels[ids[:, 0]], scores[:, 0], threshold, len(class_names)
    )
    entangled = entangled_pairs(counts, class_names)
    sections.append(
        Section(
            "Confusion of the nearest match",
            f"Rows: the query's class. Columns: the class of its nearest match, or "
            f"{NO_MATCH!r} when that match scores below match_threshold {threshold:.4f}.",
            [plots.confusion_figure(counts, class_names, out / "confusion.png", title=described)],
            table=[
                (p["query_class"], p["matched_class"], str(p["count"]), f"{p['share']:.1%}")
                for p in entangled
            ],
            table_header=("query class", "nearest match's class", "queries", "share of class"),
        )
    )
    history_path = model_dir / HISTORY_JSON
    if history_path.is_file():
        history = json.loads(history_path.read_text(encoding="utf-8"))
        best_epoch = meta.get("provenance", {}).get("best_epoch")
        sections.append(
            Section(
                "Training curves",
                "From the model directory's history.json; the dashed line is the epoch "
                "whose weights were exported.",
                [
                    plots.training_figure(
                        history,
                        out / "training.png",
                        best_epoch=best_epoch,
                        title=f"{meta.get('provenance', {}).get('loss', '')} on "
                        f"{meta.get('provenance', {}).get('dataset', '?')}",
                    )
                ],
            )
        )
    epoch_grids = _copy_epoch_grids(model_dir, out)
    projection = preferred(points)
    report: dict[str, Any] = {
        "model": str(model_dir),
        "model_id": meta.get("model_id"),
        "data": source.name,
        "images": len(images),
        "classes": list(class_names),
        "match_threshold": threshold,
        "top1_correct": float(np.mean(labels[ids[:, 0]] == labels)),
        "no_match": float(np.mean(scores[:, 0] < threshold)),
        "calibration": calibration,
        "confusion": {
            "rows": list(class_names),
            "columns": [*class_names, NO_MATCH],
            "counts": counts.tolist(),
        },
        "entangled": entangled,
        "evaluation": evaluation.figures,
        "pictures": [
            {"file": str(p.path.relative_to(out)), "width": p.width, "height": p.height}
            for p in [*(p for s in sections for p in s.pictures), *epoch_grids]
        ],
    }
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    sample = stratified_sample(labels, INTERACTIVE_POINTS, seed)
    page = Page(
        title=f"Lookalike report: {model_dir.name} on {source.name}",
        meta=meta,
        report=report,
        sections=sections,
        interactive=interactive_points(
            points[projection][sample],
            labels[sample],
            shown[sample],
            class_names,
            nearest_labels=labels[ids[sample, 0]],
            nearest_scores=scores[sample, 0],
            method=TITLES[projection],
            total=len(images),
        ),
        epoch_grids=epoch_grids,
    )
    write_page(out, page)
    return report


def run_report(model_dir: Path, data: str, out: Path, options: ReportOptions) -> int:
    """The `report` command: build it and say where it is."""
    report = build_report(model_dir, data, out, options)
    print(
        f"report {out / 'index.html'}: {len(report['pictures'])} pictures of "
        f"{report['images']} held-out images ({len(report['classes'])} classes) from "
        f"{report['data']}"
    )
    print(
        f"nearest match right for {report['top1_correct']:.1%} of queries; "
        f"{report['no_match']:.1%} below match_threshold {report['match_threshold']:.4f}"
    )
    return 0
