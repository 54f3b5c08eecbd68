"""`python -m app serve`: the HTTP API under uvicorn."""

from __future__ import annotations

import argparse
import sys

from app.config import Settings

# Installed for training and benchmarks, never used by the service, and
# imported by Keras whenever present (for its scikit-learn wrappers).
UNUSED_WHEN_SERVING = ("sklearn",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # configured by LOOKALIKE_* variables only, like the container


def hide_unused_modules() -> None:
    """Make importing scikit-learn fail in this process, so Keras skips it.

    Keras imports scikit-learn, and much of SciPy with it, when it is
    installed, only to define wrappers the service never calls. That was
    0.85 s of the ~5 s of CPU a 1M-item service spends before it is ready, and
    57 MiB resident. Only the serving process does this; the trainer, the
    other commands and the tests import scikit-learn as usual.
    """
    for name in UNUSED_WHEN_SERVING:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


def run(args: argparse.Namespace, settings: Settings) -> int:
    hide_unused_modules()
    import uvicorn

    from app.main import create_app
    from app.observability import queued_logging

    with queued_logging():
        uvicorn.run(
            create_app(settings, freeze_gc=True),
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    return 0
