"""`python -m app import DIR`: index a folder of images from the command line.

Ids come from file names; metadata optionally from a CSV or JSON-lines file
keyed by id. Each batch is committed as it is embedded, and ids already in the
catalogue are skipped, so an interrupted import picks up where it stopped.
With the local backend, run it while the server is stopped (a running server
sees the new items at its next start); with Milvus, replicas see them at once.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from app.bulk_embed import embed_stream
from app.catalog import Metadata, NewItem, open_catalog
from app.config import Settings
from app.encoder import Encoder
from app.errors import InvalidField
from app.form_fields import validate_id
from app.image_preparer import ImagePreparer
from app.model_bundle import read_model_info
from app.model_runtime import prepare_for_serving

log = logging.getLogger("lookalike.import")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, help="folder of images (searched recursively)")
    parser.add_argument(
        "--metadata",
        type=Path,
        help="CSV with an `id` column, or JSON lines with an `id` key; other columns/keys "
        "become the item's metadata",
    )
    parser.add_argument(
        "--id-from",
        choices=("name", "path"),
        default="name",
        help="id = file name without extension (default), or the path relative to FOLDER "
        "without extension (for folders that repeat names)",
    )
    parser.add_argument(
        "--update", action="store_true", help="re-embed ids already in the catalogue"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per encoder call")


def find_images(folder: Path, id_from: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InvalidField(f"{folder} is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        relative = path.relative_to(folder).with_suffix("")
        item_id = validate_id(relative.name if id_from == "name" else relative.as_posix())
        if item_id in found:
            raise InvalidField(
                f"{found[item_id]} and {path} would both get id {item_id!r}; use --id-from path"
            )
        found[item_id] = path
    return found


def read_metadata(path: Path | None) -> dict[str, Metadata]:
    if path is None:
        return {}
    table: dict[str, Metadata] = {}
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                item_id = row.pop("id", None)
                if item_id:
                    table[item_id] = {k: v for k, v in row.items() if k}
        return table
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise InvalidField(f"{path}:{number} is not JSON: {exc}") from exc
        if not isinstance(record, dict) or "id" not in record:
            raise InvalidField(f"{path}:{number} must be an object with an `id`")
        item_id = str(record.pop("id"))
        nested = record.pop("metadata", None)
        table[item_id] = nested if isinstance(nested, dict) else record
    return table


def run(args: argparse.Namespace, settings: Settings) -> int:
    images = find_images(args.folder, args.id_from)
    metadata = read_metadata(args.metadata)
    model = read_model_info(settings.model_dir)
    catalog = open_catalog(settings, model_id=model.model_id, embedding_dim=model.embedding_dim)
    try:
        todo = (
            list(images)
            if args.update
            else [item_id for item_id in images if catalog.get(item_id) is None]
        )
        skipped = len(images) - len(todo)
        if not todo:
            print(f"nothing to import: all {len(images)} images are already indexed")
            return 0
        encoder = Encoder(model, threads=settings.thread_count)
        preparer = ImagePreparer(model, settings)

        def records() -> Iterator[tuple[str, bytes]]:
            for item_id in todo:
                yield item_id, images[item_id].read_bytes()

        stored = 0
        failures: list[tuple[str, str]] = []
        with tqdm(total=len(todo), unit="img", desc="import") as progress:
            for batch in embed_stream(
                encoder,
                records(),
                lambda data: preparer.prepare(data, keep_copy=True),
                batch_size=args.batch_size,
            ):
                items = [
                    NewItem(id=i, embedding=v, metadata=metadata.get(i, {}), image=copy)
                    for i, v, copy in zip(
                        batch.tokens, batch.vectors, batch.stored_copies, strict=True
                    )
                ]
                catalog.upsert(items)
                stored += len(items)
                failures.extend(batch.failures)
                progress.update(len(items) + len(batch.failures))
    finally:
        catalog.close()
    for item_id, reason in failures:
        log.warning("skipped %s (%s): %s", item_id, images[item_id], reason)
    print(
        f"imported {stored} images, skipped {skipped} already indexed, {len(failures)} unreadable"
    )
    print(prepare_for_serving(model, settings))
    return 0 if not failures else 1
