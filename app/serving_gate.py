"""A gate that lets a model switch happen between requests, never during one.

Every request that touches the model or the catalogue passes through `use()`.
A switch closes the gate, waits until no request is in flight, swaps model,
encoder and index, and reopens it: requests arriving meanwhile wait (for as
long as the swap takes) instead of mixing the old model with the new index.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ServingGate:
    def __init__(self) -> None:
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()

    @asynccontextmanager
    async def use(self) -> AsyncIterator[None]:
        await self._open.wait()
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    @asynccontextmanager
    async def closed(self) -> AsyncIterator[None]:
        """Hold new requests back and wait for running ones to finish."""
        self._open.clear()
        try:
            await self._idle.wait()
            yield
        finally:
            self._open.set()
