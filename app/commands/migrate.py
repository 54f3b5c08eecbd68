"""`python -m app migrate --to milvus`: copy the local catalogue into a Milvus collection.

The source is LOOKALIKE_DATA_DIR's SQLite catalogue, the target the collection
named by the LOOKALIKE_MILVUS_* settings. Re-running skips what is already
copied, so an interrupted migration resumes and a later one catches up.
"""

from __future__ import annotations

import argparse

from tqdm import tqdm

from app.config import Settings
from app.errors import InvalidField


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--to",
        choices=["milvus"],
        required=True,
        help="the backend to copy into; LOOKALIKE_MILVUS_URI and _COLLECTION say where",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="items per Milvus write")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from app.migration import migrate_to_milvus

    if args.batch_size < 1:
        raise InvalidField("--batch-size must be at least 1")
    with tqdm(unit="item", desc="migrate") as progress:
        result = migrate_to_milvus(
            settings,
            batch_size=args.batch_size,
            on_start=lambda total: progress.reset(total=total),
            on_batch=progress.update,
        )
    print(
        f"{result.copied} items copied, {result.skipped} already there, into Milvus collection "
        f"{settings.milvus_collection!r} (model {result.model_id[:12]}); "
        "serve it with LOOKALIKE_BACKEND=milvus"
    )
    return 0
