"""What the encoder's thread does with one batch: decode, embed once, search once per option set.

A search by image is one job from the upload's bytes to its hits, run on the
micro-batcher's thread (app/batcher.py): the event loop hands it over once and
gets the hits back, instead of handing the request to a decode pool, the
encoder and a search thread in turn. Batching the search as well as the model
call also pays off in the index: one flat scan answers every query of the
batch (at 100k vectors, 16 queries together cost about what 1.5 cost one by
one).

Embed jobs (`/index`, `/similarity`) bring their own decoded pixels and share
the same model call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from app.catalog import Catalog, Hit, MetadataFilter
from app.regions import Box

if TYPE_CHECKING:
    from app.embedding import ImagePreparer

EmbedFn = Callable[[np.ndarray], np.ndarray]


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


Job = EmbedJob | SearchJob
Result = np.ndarray | list[Hit]


def job_size(job: Job) -> int:
    """Images a job adds to the model call, counted against the batch limit."""
    return len(job.images) if isinstance(job, EmbedJob) else 1


class EncoderWork:
    """The batch function: one model call for every image of the batch, then the searches."""

    def __init__(
        self,
        preparer: ImagePreparer,
        embed: EmbedFn,
        catalog: Catalog,
        *,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._preparer = preparer
        self._embed = embed
        self._catalog = catalog
        self._on_batch = on_batch

    def __call__(self, jobs: Sequence[Job]) -> list[Result | BaseException]:
        outcomes: list[Result | BaseException | None] = [None] * len(jobs)
        images: list[np.ndarray] = []
        rows: list[tuple[int, int]] = []  # (job, first row of its images)
        row = 0
        vectors = np.zeros((0, 0), dtype=np.float32)
        for i, job in enumerate(jobs):
            if isinstance(job, EmbedJob):
                pixels = job.images
            else:
                try:
                    pixels = self._preparer.prepare(job.data, box=job.box).pixels[None]
                except Exception as exc:  # its own request's 400/413/415/422
                    outcomes[i] = exc
                    continue
            images.append(pixels)
            rows.append((i, row))
            row += len(pixels)
        if images:
            try:
                vectors = self._embed(np.concatenate(images))
            except Exception as exc:
                for i, _ in rows:
                    outcomes[i] = exc
                rows = []
            else:
                if self._on_batch is not None:
                    self._on_batch(len(vectors))
        searches: dict[tuple[object, ...], list[tuple[int, int]]] = {}
        for i, first in rows:
            job = jobs[i]
            if isinstance(job, EmbedJob):
                outcomes[i] = vectors[first : first + len(job.images)]
            else:
                searches.setdefault(job.options.key(), []).append((i, first))
        for group in searches.values():
            self._search(jobs, group, vectors, outcomes)
        return [o if o is not None else RuntimeError("job left unanswered") for o in outcomes]

    def _search(
        self,
        jobs: Sequence[Job],
        group: list[tuple[int, int]],
        vectors: np.ndarray,
        outcomes: list[Result | BaseException | None],
    ) -> None:
        first_job = jobs[group[0][0]]
        assert isinstance(first_job, SearchJob)
        options = first_job.options
        try:
            found = self._catalog.search(
                vectors[[first for _, first in group]],
                options.k,
                min_score=options.min_score,
                metadata_filter=options.metadata_filter,
                group_by_product=options.group_by_product,
            )
        except Exception as exc:
            for i, _ in group:
                outcomes[i] = exc
            return
        for (i, _), hits in zip(group, found, strict=True):
            outcomes[i] = hits
