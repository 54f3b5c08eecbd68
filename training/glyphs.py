"""A second built-in set: the 62 letters and digits in every installed font face.

Class = character, examples = faces. It asks more of an encoder than digits do
(62 classes, serif against sans, italics, a and α-like script faces), needs no
download, and its size depends only on the fonts the machine has, which the
source's name records so a figure can be traced to its faces.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training.datasets import DataError, DataSource, ImageSet

CHARACTERS = string.digits + string.ascii_uppercase + string.ascii_lowercase
FONT_DIRECTORIES = (
    Path("/usr/share/fonts"),
    Path("/usr/share/texmf/fonts"),
    Path("/usr/local/share/fonts"),
    Path.home() / ".fonts",
    Path.home() / ".local/share/fonts",
)
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".pfb", ".t1")
# Faces whose letters are pictures or Greek: they would teach the wrong classes.
NOT_LATIN = re.compile(r"symbol|dingbat|d050000l|emoji|math|webding|wingding", re.IGNORECASE)
RENDER_SIZE = 48
FRAME_CAPS = 1.65  # frame side, in capital heights
CENTRE_CAPS = 0.45  # frame centre above the baseline, in capital heights
JITTER = 0.02  # largest random shift, as a fraction of the frame side


def font_faces(directories: tuple[Path, ...] = FONT_DIRECTORIES) -> list[ImageFont.FreeTypeFont]:
    """One font per distinct (family, style), whatever file formats carry it.

    URW's base-35 faces, for one, ship as .otf, .t1 and .pfb at once.
    """
    faces: dict[tuple[str, str], ImageFont.FreeTypeFont] = {}
    files = sorted(
        {
            p
            for d in directories
            if d.is_dir()
            for p in d.rglob("*")
            if p.suffix.lower() in FONT_SUFFIXES
        }
    )
    for path in files:
        for index in range(_face_count(path)):
            try:
                font = ImageFont.truetype(str(path), RENDER_SIZE, index=index)
                family, style = font.getname()
            except OSError:
                continue
            key = (family or path.stem, style or "")
            if key in faces or NOT_LATIN.search(f"{family} {path.name}"):
                continue
            if _draws_characters(font):
                faces[key] = font
    return [faces[key] for key in sorted(faces)]


def _face_count(path: Path) -> int:
    if path.suffix.lower() != ".ttc":
        return 1
    try:
        with path.open("rb") as handle:
            header = handle.read(12)
        return int.from_bytes(header[8:12], "big") if header[:4] == b"ttcf" else 1
    except OSError:
        return 0


def _draws_characters(font: ImageFont.FreeTypeFont) -> bool:
    """False for faces that draw the missing-glyph box for ordinary letters."""

    def drawn(text: str) -> bytes:
        mask = font.getmask(text)
        return (
            bytes(Image.frombytes("L", mask.size, bytes(mask)).tobytes()) if mask.size[0] else b""
        )

    missing = drawn("\ue000")
    masks = {drawn(c) for c in "aAgQ07"}
    return missing not in masks and all(any(mask) for mask in masks)


def render(
    font: ImageFont.FreeTypeFont, character: str, size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Black glyph on white in a frame scaled to the face's capital height.

    Fitting each glyph to the frame would make "o" and "O" the same picture;
    a frame fixed relative to the baseline and the height of "H" keeps case and
    descenders visible. Scaling by the capital height rather than the face's
    ascent and descent matters: faces differ widely in the line spacing their
    metrics declare, and that spread would make the same letter a different
    size from face to face for no visual reason (raw-pixel MAP@R on the unseen
    half rose from 0.14 to about 0.37 with this frame). A light random shift,
    scale and tilt stand in for the variation of real samples.
    """
    _, top, _, _ = font.getbbox("H", anchor="ls")
    left, _, right, _ = font.getbbox(character, anchor="ls")
    cap = -top
    if right <= left or cap <= 0:
        raise ValueError("empty glyph")
    side = cap * FRAME_CAPS * rng.uniform(0.95, 1.05)
    # Frame centre relative to the glyph's origin on the baseline: midway
    # across the ink, a little under half a capital above the baseline, which
    # leaves room for descenders below and ascenders above.
    centre_x = (left + right) / 2 + rng.uniform(-JITTER, JITTER) * side
    centre_y = -cap * CENTRE_CAPS + rng.uniform(-JITTER, JITTER) * side
    frame = Image.new("L", (round(side), round(side)), 255)
    origin = (side / 2 - centre_x, side / 2 - centre_y)
    ImageDraw.Draw(frame).text(origin, character, font=font, fill=0, anchor="ls")
    frame = frame.rotate(
        float(rng.uniform(-6, 6)), resample=Image.Resampling.BILINEAR, fillcolor=255
    )
    frame = frame.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.repeat(np.asarray(frame, dtype=np.uint8)[..., None], 3, axis=-1)


def load_glyphs(image_size: tuple[int, int] = (32, 32), *, seed: int = 0) -> DataSource:
    """Render every character in every face; fails clearly when no face is installed."""
    faces = font_faces()
    if not faces:
        raise DataError(
            "no font faces found for --data glyphs; install e.g. Debian's fonts-dejavu-core"
        )
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for font in faces:
        for label, character in enumerate(CHARACTERS):
            try:
                images.append(render(font, character, image_size, rng))
            except ValueError:
                continue
            labels.append(label)
    return DataSource(
        "glyphs",
        tuple(CHARACTERS),
        ImageSet(np.array(labels, dtype=np.int64), images=np.stack(images)),
        description=f"{len(faces)} font faces x {len(CHARACTERS)} characters",
    )
