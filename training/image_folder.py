"""A folder of class sub-folders as a data source, read lazily.

Only paths and labels are kept; pixels are decoded while training, so a
catalogue of 100k photos trains in bounded memory. A first pass opens every
file's header, so files Pillow cannot even identify are skipped and counted
up front instead of failing an epoch later.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.datasets import DataError, DataSource, ImageSet
from training.image_files import (
    IMAGE_EXTENSIONS,
    UnreadableImage,
    is_image_path,
    load_rgb,
    looks_readable,
)
from training.runtime import available_cores

UNLABELED_CLASS = "(unlabeled)"


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p))


def scan_folder(root: Path, *, unlabeled: bool = False, progress: bool = True) -> DataSource:
    """Class = first-level sub-folder, as `keras.utils.image_dataset_from_directory` has it.

    With `unlabeled`, images directly in `root` count too (a flat catalogue),
    and the sub-folder names, if any, are kept only to score retrieval.
    """
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"--data {root} is neither a folder nor one of digits, cifar10, glyphs")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found: list[tuple[Path, str]] = []
    for class_dir in class_dirs:
        found.extend((path, class_dir.name) for path in _images_under(class_dir))
    loose = sorted(p for p in root.iterdir() if p.is_file() and is_image_path(p))
    if unlabeled:
        found.extend((path, UNLABELED_CLASS) for path in loose)
    if not found:
        kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
        hint = "" if unlabeled or not loose else " (images directly in it need --unlabeled)"
        raise DataError(f"no images ({kinds}) in class sub-folders of {root}{hint}")

    readable = _check_readable([path for path, _ in found], progress=progress)
    kept = [item for item, ok in zip(found, readable, strict=True) if ok]
    skipped = tuple(path for (path, _), ok in zip(found, readable, strict=True) if not ok)
    if not kept:
        raise DataError(f"none of the {len(found)} image files in {root} could be read")
    class_names = tuple(sorted({name for _, name in kept}))
    if len(class_names) < 2 and not unlabeled:
        raise DataError(
            f"{root} has one class ({class_names[0]!r}); metric learning needs at least two "
            "class sub-folders, or --unlabeled to treat every image as its own class"
        )
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[name] for _, name in kept], dtype=np.int64)
    paths = tuple(path for path, _ in kept)
    return DataSource(str(root), class_names, ImageSet(labels, paths=paths), skipped=skipped)


def _check_readable(paths: list[Path], *, progress: bool) -> list[bool]:
    """Header checks in threads: Pillow releases the GIL while it reads."""
    workers = max(2, min(16, available_cores() * 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        checks = pool.map(looks_readable, paths, chunksize=64)
        return list(
            tqdm(
                checks,
                total=len(paths),
                desc="scanning",
                unit="file",
                disable=None if progress else True,
                leave=False,
            )
        )


class FileReader:
    """Decodes files for the input pipeline and remembers the ones that fail.

    The header scan misses truncated files; those fail here instead. Failing
    indices go into `failed`, which the batch sampler shares so it stops
    drawing them, and the decoder returns a blank image for the one batch
    already under way rather than stopping training.
    """

    def __init__(self, paths: tuple[Path, ...], size: tuple[int, int]) -> None:
        self.paths = paths
        self.size = size
        self.failed: set[int] = set()
        self._lock = threading.Lock()

    def read(self, index: int) -> np.ndarray:
        try:
            return load_rgb(self.paths[index], self.size)
        except UnreadableImage:
            with self._lock:
                self.failed.add(int(index))
            return np.full((*self.size, 3), 255, dtype=np.uint8)

    @property
    def failed_paths(self) -> tuple[Path, ...]:
        with self._lock:
            return tuple(self.paths[i] for i in sorted(self.failed))
