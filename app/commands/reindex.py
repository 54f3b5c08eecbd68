"""`python -m app reindex --model DIR`: move the local catalogue to a new model.

Re-embeds the kept image copies with the new model (resumable), then switches
every row in one transaction. Run it with the server stopped, then start the
server with LOOKALIKE_MODEL_DIR pointing at the new model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from app.catalog_store import CatalogStore
from app.config import Settings
from app.data_lock import DataDirLock
from app.embedding import ImagePreparer
from app.encoder import Encoder
from app.errors import InvalidField
from app.local_catalog import SNAPSHOT_FILE, SNAPSHOT_META
from app.model_bundle import read_model_info
from app.reindex import Reindexer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="the new model directory")
    parser.add_argument(
        "--drop-missing",
        action="store_true",
        help="delete items that have no kept image copy instead of refusing to switch",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per encoder call")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.backend != "local":
        raise InvalidField("reindex works on the local backend (LOOKALIKE_BACKEND=local)")
    model = read_model_info(args.model)
    lock = DataDirLock(settings.data_dir, "python -m app reindex")
    store = CatalogStore(settings.database_path)
    try:
        if store.get_meta("model_id") == model.model_id:
            print(f"the catalogue already holds embeddings of {model.model_id[:12]}")
            return 0
        encoder = Encoder(model, threads=settings.thread_count)
        reindexer = Reindexer(store, model, encoder, ImagePreparer(model, settings))
        with tqdm(total=reindexer.pending_count(), unit="img", desc="reindex") as progress:
            reindexer.embed_pending(
                batch_size=args.batch_size,
                on_progress=lambda done, failed: progress.update(done + failed),
            )
        result = reindexer.switch(drop_missing=args.drop_missing)
    finally:
        store.close()
        lock.release()
    for name in (SNAPSHOT_FILE, SNAPSHOT_META):
        (settings.data_dir / name).unlink(missing_ok=True)
    print(
        f"switched {result.items} items to model {result.model_id[:12]}"
        + (f", dropped {result.dropped} without a usable copy" if result.dropped else "")
        + f"; now serve with LOOKALIKE_MODEL_DIR={args.model}"
    )
    return 0
