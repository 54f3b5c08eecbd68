"""index.html of a training report: every picture, the figures, and a projection to explore.

The page must open from a laptop's file manager, an archived CI artefact or an
air-gapped machine, so it loads nothing from anywhere: CSS and JavaScript are
inline, the interactive projection's points and thumbnails are inline JSON
with data: URIs, and the PNGs are referenced by relative path inside the
report folder. The projection is SVG built by a few lines of plain script.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from training.plots import Picture, class_colours

THUMBNAIL_SIDE = 64
PNG_UP_TO = 32
"""Images this small (digits, glyphs) stay lossless PNG; larger ones become small JPEGs."""


@dataclass(frozen=True)
class Section:
    heading: str
    text: str
    pictures: list[Picture]
    table: list[tuple[str, ...]] = field(default_factory=list)
    table_header: tuple[str, ...] = ()


@dataclass(frozen=True)
class Page:
    title: str
    meta: dict[str, Any]
    report: dict[str, Any]
    sections: list[Section]
    interactive: dict[str, Any]
    epoch_grids: list[Picture]


def thumbnail_uri(pixels: np.ndarray) -> str:
    """A data: URI small enough that a thousand of them keep the page a few MB."""
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    buffer = io.BytesIO()
    if max(image.size) <= PNG_UP_TO:
        image.save(buffer, format="PNG", optimize=True)
        kind = "png"
    else:
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
        image.save(buffer, format="JPEG", quality=85)
        kind = "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def interactive_points(
    points: np.ndarray,
    labels: np.ndarray,
    pixels: np.ndarray,
    class_names: Sequence[str],
    *,
    nearest_labels: np.ndarray,
    nearest_scores: np.ndarray,
    method: str,
    total: int,
) -> dict[str, Any]:
    """What the page's script draws: points in [0, 1], classes, nearest matches, thumbnails."""
    low, high = points.min(axis=0), points.max(axis=0)
    scaled = (points - low) / np.where(high > low, high - low, 1.0)
    return {
        "method": method,
        "total": int(total),
        "classes": list(class_names),
        "colours": class_colours(len(class_names)),
        "x": np.round(scaled[:, 0], 4).tolist(),
        "y": np.round(scaled[:, 1], 4).tolist(),
        "label": labels.astype(int).tolist(),
        "nearest": nearest_labels.astype(int).tolist(),
        "score": np.round(nearest_scores.astype(float), 4).tolist(),
        "thumb": [thumbnail_uri(image) for image in pixels],
    }


def _inline_json(value: Any, element_id: str) -> str:
    # "</" would end the script element early; JSON allows "<\/" for it.
    text = json.dumps(value, separators=(",", ":")).replace("</", "<\\/")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def _img(picture: Picture, out: Path) -> str:
    source = html.escape(picture.path.relative_to(out).as_posix())
    alt = html.escape(picture.title)
    return (
        f'<figure><a href="{source}"><img src="{source}" width="{picture.width}" '
        f'height="{picture.height}" alt="{alt}" loading="lazy"></a></figure>'
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _facts(page: Page) -> str:
    meta, report = page.meta, page.report
    provenance = meta.get("provenance", {})
    rows = [
        ("model", f"{report['model']} ({str(meta.get('model_id', '?'))[:12]})"),
        (
            "trained",
            f"{provenance.get('loss', '?')} on {provenance.get('dataset', '?')}, "
            f"epoch {provenance.get('best_epoch', '?')} of {provenance.get('epochs', '?')} kept, "
            f"{provenance.get('created_at', '?')}",
        ),
        (
            "encoder",
            f"{meta.get('image_size')} pixels in, {meta.get('embedding_dim')} dimensions out",
        ),
        ("match_threshold", f"{meta.get('match_threshold', float('nan')):.4f}"),
        (
            "this report",
            f"{report['images']} held-out images of {report['data']}, "
            f"{len(report['classes'])} classes",
        ),
        (
            "nearest match",
            f"right class for {report['top1_correct']:.1%} of queries, "
            f"{report['no_match']:.1%} below match_threshold",
        ),
    ]
    return _table(("", ""), rows)


def _figures(evaluation: dict[str, dict[str, dict[str, float]]]) -> str:
    from training.evaluate import TABLE_FIGURES

    columns = [
        c
        for c in (*TABLE_FIGURES, "linear_probe")
        if any(c in row for methods in evaluation.values() for row in methods.values())
    ]
    rows = [
        (set_name, method, *(f"{row[c]:.4f}" if c in row else "" for c in columns))
        for set_name, methods in evaluation.items()
        for method, row in methods.items()
    ]
    return _table(("set", "method", *columns), rows)


def _section(section: Section, out: Path) -> str:
    parts = [f"<section><h2>{html.escape(section.heading)}</h2>"]
    parts.append(f"<p>{html.escape(section.text)}</p>")
    parts += [_img(picture, out) for picture in section.pictures]
    if section.table:
        parts.append(_table(section.table_header, section.table))
    return "".join(parts) + "</section>"


def _epochs(grids: list[Picture], out: Path) -> str:
    if not grids:
        return ""
    last = grids[-1]
    sources = [g.path.relative_to(out).as_posix() for g in grids]
    return (
        "<section><h2>Neighbours during training</h2><p>The grids <code>train "
        "--log-neighbours</code> wrote at the end of each epoch (epoch 0: before training). "
        "Drag the slider to watch the neighbours change.</p>"
        f'<p><input type="range" id="epoch" min="0" max="{len(grids) - 1}" '
        f'value="{len(grids) - 1}" aria-label="epoch"> <span id="epoch-label">'
        f"{html.escape(last.title)}</span></p>"
        + _img(last, out).replace("<img ", '<img id="epoch-img" ', 1)
        + _inline_json(sources, "epoch-data")
        + "</section>"
    )


STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1280px;padding:1rem 2rem;
color:#222}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
td,th{border-bottom:1px solid #eee;padding:.2rem .7rem;text-align:left}
figure{margin:1rem 0}img{max-width:100%;height:auto}
.explore{display:flex;gap:1rem;align-items:flex-start}
#scatter{flex:1;min-width:0;border:1px solid #ddd;background:#fff}
#scatter circle{stroke:#fff;stroke-width:.5;cursor:pointer}
#scatter circle.dim{opacity:.1}#scatter circle.on{stroke:#000;stroke-width:2.5}
aside{width:260px;font-size:.9rem}
#info-img{width:128px;height:128px;object-fit:contain;image-rendering:pixelated;
border:1px solid #ccc;background:#f6f6f6;display:block}
#legend{list-style:none;padding:0;max-height:420px;overflow:auto}
#legend li{cursor:pointer;padding:1px 4px}#legend li.off{opacity:.35}
#legend span{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.4em}
"""

SCRIPT = """
(function () {
  const d = JSON.parse(document.getElementById("points-data").textContent);
  const svg = document.getElementById("scatter"), NS = "http://www.w3.org/2000/svg";
  const W = 1000, H = 700, P = 16, r = d.x.length > 500 ? 3.5 : 5;
  const img = document.getElementById("info-img"), text = document.getElementById("info-text");
  let pinned = -1, only = -1;
  const dots = d.x.map(function (x, i) {
    const c = document.createElementNS(NS, "circle");
    c.setAttribute("cx", (P + x * (W - 2 * P)).toFixed(1));
    c.setAttribute("cy", (P + (1 - d.y[i]) * (H - 2 * P)).toFixed(1));
    c.setAttribute("r", r);
    c.setAttribute("fill", d.colours[d.label[i]]);
    c.dataset.i = i;
    svg.appendChild(c);
    return c;
  });
  function show(i) {
    img.src = d.thumb[i];
    const right = d.nearest[i] === d.label[i];
    text.textContent = "class " + d.classes[d.label[i]] + " \u2014 nearest match: " +
      d.classes[d.nearest[i]] + " (" + d.score[i].toFixed(3) + ")" +
      (right ? "" : " \u2717 wrong class");
  }
  function index(e) {
    const i = e.target.dataset ? e.target.dataset.i : undefined;
    return i === undefined ? -1 : +i;
  }
  svg.addEventListener("mouseover", function (e) {
    const i = index(e);
    if (i >= 0 && pinned < 0) show(i);
  });
  svg.addEventListener("click", function (e) {
    if (pinned >= 0) dots[pinned].classList.remove("on");
    pinned = index(e);
    if (pinned >= 0) { dots[pinned].classList.add("on"); show(pinned); }
  });
  const legend = document.getElementById("legend");
  const present = Array.from(new Set(d.label)).sort(function (a, b) { return a - b; });
  present.forEach(function (label) {
    const li = document.createElement("li"), swatch = document.createElement("span");
    swatch.style.background = d.colours[label];
    li.appendChild(swatch);
    li.appendChild(document.createTextNode(d.classes[label]));
    li.addEventListener("click", function () {
      only = only === label ? -1 : label;
      dots.forEach(function (c, i) {
        c.classList.toggle("dim", only >= 0 && d.label[i] !== only);
      });
      legend.querySelectorAll("li").forEach(function (item, n) {
        item.classList.toggle("off", only >= 0 && present[n] !== only);
      });
    });
    legend.appendChild(li);
  });
  const slider = document.getElementById("epoch");
  if (slider) {
    const grids = JSON.parse(document.getElementById("epoch-data").textContent);
    slider.addEventListener("input", function () {
      document.getElementById("epoch-img").src = grids[+slider.value];
      document.getElementById("epoch-label").textContent = "epoch " + slider.value;
    });
  }
})();
"""


def _explore(points: dict[str, Any]) -> str:
    shown = len(points["x"])
    return (
        "<section><h2>Explore the projection</h2>"
        f"<p>{html.escape(points['method'])} of {shown} of the {points['total']} held-out "
        "images. Hover over a point to see the image and the class of its nearest match, "
        "click to pin it, click a class to show it alone.</p>"
        '<div class="explore"><svg id="scatter" viewBox="0 0 1000 700" role="img" '
        'aria-label="interactive projection of the embeddings"></svg>'
        '<aside><img id="info-img" alt="the image under the pointer">'
        '<p id="info-text">Hover over a point.</p><ul id="legend"></ul></aside></div>'
        + _inline_json(points, "points-data")
        + "</section>"
    )


def write_page(out: Path, page: Page) -> Path:
    """Write out/index.html; every picture is referenced relative to `out`."""
    body = [
        f"<h1>{html.escape(page.title)}</h1>",
        _facts(page),
        "<h2>Retrieval figures</h2><p>Leave-one-out retrieval on each held-out set, beside "
        "the same network untrained and raw pixels (training/evaluate.py).</p>",
        _figures(page.report["evaluation"]),
        _explore(page.interactive),
        *(_section(section, out) for section in page.sections),
        _epochs(page.epoch_grids, out),
    ]
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(page.title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + f"<script>{SCRIPT}</script></body></html>\n"
    )
    path = out / "index.html"
    path.write_text(document, encoding="utf-8")
    return path
