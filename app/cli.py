"""`python -m app ...`: serve the API, and the ops commands that work on its catalogue.

Each command lives in its own module with `add_arguments(parser)` and
`run(args, settings) -> int`; this file only wires them up.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from app.config import Settings
from app.errors import LookalikeError

# command name -> (module under app.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve", "run the HTTP API (configured by LOOKALIKE_* variables)"),
    "import": ("import_folder", "index a folder of images (resumable)"),
    "reindex": ("reindex", "re-embed the catalogue with a new model (resumable, atomic)"),
    "migrate": ("migrate", "copy the local catalogue into Milvus (resumable)"),
}


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"app.commands.{module_name}")
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings)
    module = importlib.import_module(f"app.commands.{COMMANDS[args.command][0]}")
    try:
        code: int = module.run(args, settings)
    except LookalikeError as exc:
        logging.getLogger("lookalike").error("%s", exc.message)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
