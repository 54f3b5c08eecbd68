"""How the service starts processes of its own: from a fork server, never by forking itself.

Forking the service would copy its threads' locks mid-use. The fork server is
started once, imports the embedding worker's module, and forks each child
from that quiet state in milliseconds, where a fresh interpreter takes ~0.5 s.
The embedding worker (app/embed_worker.py) and the one-off LiteRT converter
(app/model_runtime.py) share it, so it imports the same modules for both.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

# Imported by the fork server before it forks anything: what every child needs.
PRELOAD = ["app.embed_worker"]


def child_context() -> Any:
    """The multiprocessing context children of the service are started from."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        return context
    return multiprocessing.get_context("spawn")
