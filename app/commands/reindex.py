"""`python -m app reindex --model DIR`: move the catalogue to a new model.

With the server running, it asks the server to reindex online (the service
keeps answering with the old model and switches atomically) and follows the
progress. With the server stopped, it does the same work itself. Either way
new embeddings come from the kept image copies, and a crash leaves either the
old or the new catalogue complete.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import httpx
from tqdm import tqdm

from app.catalog_store import CatalogStore
from app.config import Settings
from app.data_lock import DataDirLock
from app.encoder import Encoder
from app.errors import CatalogBusy, InvalidField
from app.image_preparer import ImagePreparer
from app.local_catalog import SNAPSHOT_FILE, SNAPSHOT_META
from app.model_bundle import read_model_info
from app.model_runtime import prepare_for_serving
from app.reindex import Reindexer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="the new model directory")
    parser.add_argument(
        "--drop-missing",
        action="store_true",
        help="offline only: delete items that have no kept image copy instead of refusing",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per encoder call")
    parser.add_argument(
        "--url",
        help="the running server to ask (default: http://LOOKALIKE_HOST:LOOKALIKE_PORT)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.backend != "local":
        raise InvalidField("reindex works on the local backend (LOOKALIKE_BACKEND=local)")
    model = read_model_info(args.model)
    try:
        lock = DataDirLock(settings.data_dir, "python -m app reindex")
    except CatalogBusy:
        return _online(args, settings)
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
        + f"; serve with LOOKALIKE_MODEL_DIR={args.model}"
    )
    print(prepare_for_serving(model, settings))
    return 0


def _online(args: argparse.Namespace, settings: Settings) -> int:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = args.url or f"http://{host}:{settings.port}"
    headers = {"X-API-Key": settings.api_key[0]} if settings.api_key else {}
    print(f"the catalogue is in use by a running server; asking {url} to reindex online")
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        r = client.post("/admin/reindex", data={"model_dir": str(args.model.resolve())})
        if r.status_code != 202:
            raise InvalidField(f"the server refused: {r.status_code} {r.text}")
        with tqdm(unit="img", desc="reindex (online)") as progress:
            while True:
                status = client.get("/index").json()["reindex"]
                progress.total = status["total"]
                progress.update(status["done"] + status["failed"] - progress.n)
                if status["phase"] in ("done", "failed"):
                    break
                time.sleep(0.5)
    if status["phase"] == "failed":
        print(f"reindex failed, the old model still serves: {status['error']}")
        return 1
    print(
        f"the server now serves model {status['model_id'][:12]}; "
        f"set LOOKALIKE_MODEL_DIR={args.model} for its next start"
    )
    return 0
