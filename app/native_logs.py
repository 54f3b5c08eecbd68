"""Native libraries that write to stderr themselves, before any Python log level applies.

TensorFlow announces oneDNN while it is imported and LiteRT announces its
XNNPACK delegate when an interpreter is made; neither goes through `logging`,
so the service's log would carry their lines unformatted at every start.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def silenced_stderr() -> Iterator[None]:
    """File descriptor 2 on /dev/null for the block.

    Process-wide: other threads' stderr is lost meanwhile, so it wraps only
    start-up steps (TensorFlow's import before serving, building an
    interpreter: milliseconds), never anything that lasts while requests run.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
