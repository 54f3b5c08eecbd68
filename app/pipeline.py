"""What a search does off the event loop: two stages, each on a thread of its own.

The event loop hands a search over once (app/batcher.py) and gets its hits
back; it never moves the request between threads itself.

1. The encoder's stage embeds every image of its batch at once: uploads are
   decoded and all images go through one model call, in the embedding worker
   process (app/embed_worker.py). It forwards each search's vector to
2. the index's stage, which runs one `Catalog.search` per set of search options
   over every vector waiting for it.

The stages overlap: the worker embeds the next batch while the index answers
this one. The index's stage gathers whatever the encoder forwarded while it
was busy, and batching pays off there as much as in the model: a flat index
reads its vectors once for all the queries of a call (app/flat_scan.py).

Embed jobs (`/index`, `/similarity`) bring their own decoded pixels and share
the model calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.batcher import Forward, MicroBatcher
from app.catalog import Catalog, Hit, MetadataFilter
from app.embed_worker import BatchEmbedder, Item, Upload
from app.regions import Box


@dataclass(frozen=True)
class SearchOptions:
    """What a search asks for besides the image; queries asking the same share an index call."""

    k: int
    min_score: float | None = None
    metadata_filter: MetadataFilter | None = None
    group_by_product: bool = False

    def key(self) -> tuple[object, ...]:
        # JSON keeps 1 and true apart, which a tuple of the filter's items would not.
        flt = json.dumps(self.metadata_filter, sort_keys=True) if self.metadata_filter else None
        return (self.k, self.min_score, flt, self.group_by_product)


@dataclass(frozen=True)
class EmbedJob:
    """Decoded images [n, H, W, 3] uint8 -> their embeddings [n, D]."""

    images: np.ndarray


@dataclass(frozen=True)
class SearchJob:
    """Upload bytes (and an optional box in them) -> the catalogue's hits for that image."""

    data: bytes
    options: SearchOptions
    box: Box | None = None


@dataclass(frozen=True)
class Query:
    """A search job once embedded: what the index's stage works on."""

    vector: np.ndarray
    options: SearchOptions


EncoderJob = EmbedJob | SearchJob
# An embed job's vectors, or a search job's hits (answered by the index's stage).
Result = np.ndarray | list[Hit]


def job_size(job: EncoderJob) -> int:
    """Images a job adds to the model call, counted against the batch limit."""
    return len(job.images) if isinstance(job, EmbedJob) else 1


class EncoderStage:
    """Embed every image of the batch in one call to the embedder, then forward the searches."""

    def __init__(
        self,
        embed: BatchEmbedder,
        index_stage: MicroBatcher[Query, list[Hit]],
        *,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """`on_batch(images)` is told how many images each model call embedded."""
        self._embed = embed
        self._index_stage = index_stage
        self._on_batch = on_batch

    def __call__(self, jobs: Sequence[EncoderJob]) -> list[Any]:
        items: list[Item] = [
            job.images if isinstance(job, EmbedJob) else Upload(job.data, job.box) for job in jobs
        ]
        outcomes: list[Any] = []
        embedded = 0
        for job, outcome in zip(jobs, self._embed(items), strict=True):
            if isinstance(outcome, BaseException):
                outcomes.append(outcome)
                continue
            embedded += len(outcome)
            if isinstance(job, EmbedJob):
                outcomes.append(outcome)
            else:
                outcomes.append(Forward(self._index_stage, Query(outcome[0], job.options)))
        if self._on_batch is not None and embedded:
            self._on_batch(embedded)
        return outcomes


class IndexStage:
    """One catalogue search per set of options, over every query that waited for the index."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def __call__(self, queries: Sequence[Query]) -> list[list[Hit] | BaseException]:
        groups: dict[tuple[object, ...], list[int]] = {}
        for i, query in enumerate(queries):
            groups.setdefault(query.options.key(), []).append(i)
        outcomes: list[list[Hit] | BaseException] = [[] for _ in queries]
        for members in groups.values():
            options = queries[members[0]].options
            try:
                found = self._catalog.search(
                    np.stack([queries[i].vector for i in members]),
                    options.k,
                    min_score=options.min_score,
                    metadata_filter=options.metadata_filter,
                    group_by_product=options.group_by_product,
                )
            except Exception as exc:
                for i in members:
                    outcomes[i] = exc
                continue
            for i, hits in zip(members, found, strict=True):
                outcomes[i] = hits
        return outcomes
