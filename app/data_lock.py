"""One process at a time per local data directory.

The FAISS index lives in the memory of the process that serves it, so a second
writer (another server, an import, a reindex) would change SQLite behind its
back. An advisory lock file says who holds the directory; the OS drops it when
that process dies, even by kill -9.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from app.errors import CatalogBusy

LOCK_FILE = "lookalike.lock"


class DataDirLock:
    def __init__(self, data_dir: Path, purpose: str) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / LOCK_FILE
        self._file: IO[str] | None = self.path.open("a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            self._file = None
            raise CatalogBusy(
                f"{data_dir} is in use by {holder}; stop it first (one process owns a local "
                "catalogue at a time)"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{purpose} (pid {os.getpid()})")
        self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
