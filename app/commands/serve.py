"""`python -m app serve`: the HTTP API under uvicorn."""

from __future__ import annotations

import argparse

from app.config import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # configured by LOOKALIKE_* variables only, like the container


def run(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from app.main import create_app
    from app.observability import queued_logging

    with queued_logging():
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    return 0
