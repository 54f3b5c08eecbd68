"""The figures of a training report, drawn to PNG files with matplotlib's Agg renderer.

Figures are built on `matplotlib.figure.Figure`, not pyplot: no global state,
no display, nothing left open between figures, and the Agg canvas is the one
that renders them. Each figure is laid out in whole pixels and saved at that
size (never a "tight" bounding box), so the page can give every image its
width and height before it loads and a test can hold the file to them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps, patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

DPI = 100
CELL = 120
"""Pixels per neighbour-grid cell: an image of IMAGE_PX and two lines of text."""
IMAGE_PX = 84
GRID_HEADER = 56
QUERY_GAP = 16
LEGEND_MAX = 40
NAME_MAX = 18
SAME = "#1a9641"
OTHER = "#d7191c"
QUERY = "#222222"
QUERY_FRAME = "#2c7bb6"
BELOW_THRESHOLD = "#8a8a8a"


@dataclass(frozen=True)
class Picture:
    """A PNG written by this module and the size in pixels it was laid out at."""

    path: Path
    width: int
    height: int
    title: str


def _figure(width: int, height: int) -> Figure:
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path, title: str) -> Picture:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, facecolor="white")
    width, height = (round(v) for v in figure.get_size_inches() * DPI)
    return Picture(path, width, height, title)


def short(name: str, limit: int = NAME_MAX) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def class_colours(count: int) -> list[str]:
    """One colour per class, shared by the PNG projections and the interactive one.

    Beyond 20 classes no qualitative palette is enough; hues are then spaced by
    the golden ratio so that classes numbered side by side still differ.
    """
    if count <= 10:
        palette = colormaps["tab10"]
        return [_hex(palette(i)) for i in range(count)]
    if count <= 20:
        palette = colormaps["tab20"]
        return [_hex(palette(i)) for i in range(count)]
    palette = colormaps["turbo"]
    return [_hex(palette(0.05 + 0.9 * ((i * 0.618034) % 1.0))) for i in range(count)]


def _hex(rgba: tuple[float, ...]) -> str:
    return "#" + "".join(f"{round(channel * 255):02x}" for channel in rgba[:3])


def projection_figure(
    points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: Path, *, title: str
) -> Picture:
    """Scatter of 2-D points coloured by class; names at class medians when few enough to read."""
    figure = _figure(1000, 760)
    axes = figure.add_axes((0.03, 0.04, 0.70, 0.89))
    colours = class_colours(len(class_names))
    size = float(np.clip(4000 / max(len(points), 1), 4, 40))
    present = np.unique(labels)
    for label in present:
        chosen = labels == label
        axes.scatter(
            points[chosen, 0],
            points[chosen, 1],
            s=size,
            color=colours[label],
            alpha=0.8,
            linewidths=0,
        )
        if len(present) <= 30:
            x, y = np.median(points[chosen], axis=0)
            text = axes.text(x, y, short(class_names[label]), fontsize=9, weight="bold")
            text.set_path_effects([patheffects.withStroke(linewidth=3, foreground="white")])
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title)
    handles = [
        Line2D([], [], marker="o", linestyle="", color=colours[label])
        for label in present[:LEGEND_MAX]
    ]
    legend_title = "class" if len(present) <= LEGEND_MAX else f"{LEGEND_MAX} of {len(present)}"
    figure.legend(
        handles=handles,
        labels=[short(class_names[label], 24) for label in present[:LEGEND_MAX]],
        loc="upper left",
        bbox_to_anchor=(0.75, 0.93),
        ncol=1 if len(handles) <= 20 else 2,
        fontsize=8 if len(handles) > 20 else 9,
        title=legend_title,
        frameon=False,
    )
    return _save(figure, path, title)


def neighbour_grid(
    images: np.ndarray,
    labels: np.ndarray | None,
    class_names: Sequence[str],
    queries: np.ndarray,
    ids: np.ndarray,
    scores: np.ndarray,
    path: Path,
    *,
    title: str,
    threshold: float | None = None,
) -> Picture:
    """Each row a query (blue frame) and its neighbours, framed green for its class, red not.

    `ids[r]` and `scores[r]` are row r's neighbours in `images`, best first.
    With no labels every frame is grey: there is nothing to be right about.
    Scores below `threshold` are printed grey, as the service would say "no match".
    The images and frames are pasted into one pixel canvas (a figure of many
    axes took seconds, which `train --log-neighbours` pays every epoch).
    """
    rows, k = ids.shape
    width = (k + 1) * CELL + QUERY_GAP
    height = GRID_HEADER + rows * CELL
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    captions: list[tuple[float, float, str, str]] = []
    for row, query in enumerate(queries):
        top = GRID_HEADER + row * CELL + 6
        cells = [(int(query), None)] + [
            (int(i), float(s)) for i, s in zip(ids[row], scores[row], strict=True)
        ]
        for column, (index, score) in enumerate(cells):
            left = column * CELL + (QUERY_GAP if column else 0) + (CELL - IMAGE_PX) // 2
            name = short(class_names[labels[index]], 14) if labels is not None else ""
            if score is None:
                frame, caption, ink = QUERY_FRAME, f"query · {name}" if name else "query", QUERY
            else:
                frame = BELOW_THRESHOLD
                if labels is not None:
                    frame = SAME if labels[index] == labels[query] else OTHER
                below = threshold is not None and score < threshold
                ink = BELOW_THRESHOLD if below else QUERY
                caption = f"{score:.3f}" + (f" · {name}" if name else "")
            bottom = _paste(canvas, images[index], top, left, frame, 3 if score is None else 4)
            captions.append((left + IMAGE_PX / 2, bottom + 4, caption, ink))
    figure = _figure(width, height)
    figure.figimage(canvas, xo=0, yo=0, origin="upper")
    legend = f"green: same class as the query, red: another class (of {len(class_names)})"
    if labels is None:
        legend = "neighbours best first"
    if threshold is not None:
        legend += f"; grey score: below match_threshold {threshold:.3f}"
    figure.text(0.5, 1 - 18 / height, title, ha="center", va="center", fontsize=12)
    figure.text(0.5, 1 - 40 / height, legend, ha="center", va="center", fontsize=9)
    for x, y, caption, ink in captions:
        figure.text(
            x / width, 1 - y / height, caption, ha="center", va="top", fontsize=8, color=ink
        )
    return _save(figure, path, title)


def _paste(
    canvas: np.ndarray, image: np.ndarray, top: int, left: int, frame: str, border: int
) -> int:
    """Fit `image` into the IMAGE_PX box at (top, left) inside a frame; returns the box's bottom.

    Small images are enlarged by pixel repetition so digits stay crisp, large
    ones shrunk with a smoothing filter; either way the aspect ratio is kept.
    """
    from PIL import Image

    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    inner = IMAGE_PX - 2 * border
    scale = inner / max(picture.size)
    size = (max(1, round(picture.size[0] * scale)), max(1, round(picture.size[1] * scale)))
    small = max(picture.size) < inner
    resample = Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS
    pixels = np.asarray(picture.resize(size, resample))
    y = top + border + (inner - size[1]) // 2
    x = left + border + (inner - size[0]) // 2
    colour = np.array([int(frame[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)
    canvas[y - border : y + size[1] + border, x - border : x + size[0] + border] = colour
    canvas[y : y + size[1], x : x + size[0]] = pixels
    return top + IMAGE_PX


def _operating_point(curve: Mapping[str, np.ndarray], threshold: float) -> int:
    """Index of the curve point that "score >= threshold" lands on."""
    index = int(np.searchsorted(curve["thresholds"], threshold, side="left"))
    return min(index, len(curve["thresholds"]) - 1)


def threshold_figure(
    curve: Mapping[str, np.ndarray], threshold: float, path: Path, *, title: str
) -> Picture:
    """Precision, recall and F1 against the threshold, and the precision-recall curve.

    The model's match_threshold is marked on both, so a reader sees what it
    trades: moving it right buys precision with recall.
    """
    figure = _figure(1200, 480)
    by_threshold = figure.add_axes((0.06, 0.12, 0.40, 0.76))
    pr = figure.add_axes((0.56, 0.12, 0.40, 0.76))
    for name, colour in (("precision", "#2c7bb6"), ("recall", "#fdae61"), ("f1", "#1a9641")):
        by_threshold.plot(curve["thresholds"], curve[name], color=colour, label=name)
    point = _operating_point(curve, threshold)
    figures = {name: float(curve[name][point]) for name in ("precision", "recall", "f1")}
    marked = (
        f"match_threshold {threshold:.3f}\nP {figures['precision']:.3f}  "
        f"R {figures['recall']:.3f}  F1 {figures['f1']:.3f}"
    )
    by_threshold.axvline(threshold, color=QUERY, linestyle="--", linewidth=1, label=marked)
    by_threshold.set_xlabel("cosine similarity threshold (match if score >= threshold)")
    by_threshold.set_ylim(-0.02, 1.02)
    by_threshold.legend(loc="lower left", fontsize=9)
    by_threshold.set_title("precision, recall and F1 against the threshold", fontsize=11)
    recall, precision = curve["recall"], curve["precision"]
    # Average precision as scikit-learn defines it: precision weighted by recall gained.
    ascending = np.argsort(recall, kind="stable")
    gained = np.diff(np.concatenate([[0.0], recall[ascending]]))
    average_precision = float(np.sum(gained * precision[ascending]))
    pr.plot(recall, precision, color="#2c7bb6", label=f"average precision {average_precision:.3f}")
    pr.plot(
        [figures["recall"]], [figures["precision"]], "o", color=QUERY, label="at match_threshold"
    )
    pr.set_xlabel("recall")
    pr.set_ylabel("precision")
    pr.set_xlim(-0.02, 1.02)
    pr.set_ylim(-0.02, 1.02)
    pr.legend(loc="lower left", fontsize=9)
    pr.set_title("precision-recall curve", fontsize=11)
    figure.suptitle(title, fontsize=12)
    return _save(figure, path, title)


def confusion_figure(
    counts: np.ndarray, class_names: Sequence[str], path: Path, *, title: str
) -> Picture:
    """Rows true classes, columns the nearest match's class and a last "no match" column.

    Colour is the share of the row, so small classes read as well as big ones;
    counts are printed while the cells are large enough to hold them.
    """
    classes = len(class_names)
    side = int(np.clip(26 * (classes + 1), 420, 1800))
    left, bottom, top, right = 130, 150, 40, 110
    width, height = left + side + right, top + side + bottom
    figure = _figure(width, height)
    axes = figure.add_axes((left / width, bottom / height, side / width, side / height))
    totals = counts.sum(axis=1, keepdims=True)
    shares = counts / np.where(totals > 0, totals, 1)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    step = max(1, classes // 60)
    names = [short(n) for n in class_names]
    axes.set_xticks([*range(0, classes, step), classes])
    axes.set_xticklabels([*names[::step], "no match"], rotation=90, fontsize=8)
    axes.set_yticks(range(0, classes, step))
    axes.set_yticklabels(names[::step], fontsize=8)
    axes.axvline(classes - 0.5, color=QUERY, linewidth=1.5)
    if classes <= 25:
        for (row, column), count in np.ndenumerate(counts):
            if count:
                colour = "white" if shares[row, column] > 0.5 else QUERY
                axes.text(
                    column, row, str(count), ha="center", va="center", fontsize=8, color=colour
                )
    axes.set_xlabel("class of the nearest match (no match: its score is below match_threshold)")
    axes.set_ylabel("class of the query")
    axes.set_title(title, fontsize=11)
    colour_bar = figure.add_axes(
        ((left + side + 20) / width, bottom / height, 16 / width, side / height)
    )
    figure.colorbar(image, cax=colour_bar, label="share of the row")
    return _save(figure, path, title)


def training_figure(
    history: Mapping[str, Sequence[float]], path: Path, *, best_epoch: int | None, title: str
) -> Picture:
    """Loss per epoch and, beside it, every validation figure the run logged."""
    train_keys = [k for k in history if not k.startswith("val_") and k != "seconds" and history[k]]
    val_keys = [k for k in history if k.startswith("val_") and history[k]]
    panels = 2 if val_keys else 1
    figure = _figure(600 * panels, 450)
    for panel, keys in enumerate([train_keys, val_keys][:panels]):
        axes = figure.add_axes(((0.08 + panel) / panels, 0.12, 0.84 / panels, 0.74))
        for key in keys:
            values = history[key]
            axes.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=key)
        if best_epoch is not None:
            axes.axvline(best_epoch, color=QUERY, linestyle="--", linewidth=1, label="kept epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_title("training loss" if panel == 0 else "validation", fontsize=11)
        axes.legend(fontsize=9)
    figure.suptitle(title, fontsize=12)
    return _save(figure, path, title)
