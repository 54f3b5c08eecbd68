"""`python -m app ...`: serve the API, and the ops commands that work on its catalogue."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from app.config import Settings
from app.errors import LookalikeError


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def serve(settings: Settings) -> None:
    import uvicorn

    from app.main import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP API (configured by LOOKALIKE_* variables)")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings)
    try:
        if args.command == "serve":
            serve(settings)
    except LookalikeError as exc:
        logging.getLogger("lookalike").error("%s", exc.message)
        return 2
    return 0
