"""What a search does off the event loop: two stages, each on a thread of its own.

The event loop hands a search over once (app/batcher.py) and gets its hits
back; it never moves the request between a decode pool, the encoder and a
search thread itself.

1. The encoder's stage embeds every image of its batch in one model call (JPEG
   searches are decoded inside that call, app/jpeg_batch.py; other uploads with
   Pillow just before it), and forwards each search's vector to
2. the index's stage, which runs one `Catalog.search` per set of search options
   over every vector waiting for it.

The stages overlap: the model embeds the next batch while the index answers
this one. The index's stage gathers whatever the encoder forwarded while it
was busy, and batching pays off there as much as in the model: a flat index
reads its vectors once for all the queries of a call (app/flat_scan.py; at
100k x 64 on one core, 16 queries together cost about what 4-5 cost one by one).

Embed jobs (`/index`, `/similarity`) bring their own decoded pixels and share
the model calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from app.batcher import Forward, MicroBatcher
from app.catalog import Catalog, Hit, MetadataFilter
from app.jpeg_batch import JpegPlan
from app.regions import Box

if TYPE_CHECKING:
    from app.embedding import ImagePreparer

# Pixels [N, H, W, 3] and JPEG plans (M) -> embeddings [N + M, D], in that order.
EmbedFn = Callable[[np.ndarray, Sequence[JpegPlan]], np.ndarray]


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
    """Embed every image of the batch in one model call, then forward the searches."""

    def __init__(
        self,
        preparer: ImagePreparer,
        embed: EmbedFn,
        index_stage: MicroBatcher[Query, list[Hit]],
        *,
        plan_jpegs: bool = False,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self._preparer = preparer
        self._embed = embed
        self._index_stage = index_stage
        self._plan_jpegs = plan_jpegs
        self._on_batch = on_batch

    def __call__(self, jobs: Sequence[EncoderJob]) -> list[Any]:
        outcomes: list[Any] = [None] * len(jobs)
        planned: list[tuple[int, JpegPlan]] = []
        searches = [
            i for i, job in enumerate(jobs) if isinstance(job, SearchJob) and job.box is None
        ]
        # A lone search is decoded faster by Pillow (~0.8 ms at one client: the
        # graph's per-call overhead); with nobody else waiting there is no GIL
        # to contend for. Either way the pixels are the same.
        if self._plan_jpegs and len(searches) > 1:
            for i in searches:
                plan = self._preparer.plan(cast(SearchJob, jobs[i]).data)
                if plan is not None:
                    planned.append((i, plan))
        try:
            rows = self._embed_batch(jobs, outcomes, planned)
        except Exception:
            if not planned:
                raise
            # A JPEG whose header passed but whose data libjpeg refused fails the
            # whole call; Pillow decodes the batch instead and names the upload at fault.
            rows = self._embed_batch(jobs, outcomes, [])
        for i, vector in rows.items():
            job = jobs[i]
            if isinstance(job, EmbedJob):
                outcomes[i] = vector
            else:
                outcomes[i] = Forward(self._index_stage, Query(vector, job.options))
        return outcomes

    def _embed_batch(
        self,
        jobs: Sequence[EncoderJob],
        outcomes: list[Any],
        planned: list[tuple[int, JpegPlan]],
    ) -> dict[int, np.ndarray]:
        """Rows per embedded job (an embed job [n, D], a search [D]); failures go to `outcomes`."""
        in_graph = {i for i, _ in planned}
        images: list[np.ndarray] = []
        decoded: list[tuple[int, int]] = []  # (job, its first row)
        row = 0
        for i, job in enumerate(jobs):
            if i in in_graph:
                continue
            if isinstance(job, EmbedJob):
                pixels = job.images
            else:
                try:
                    pixels = self._preparer.prepare(job.data, box=job.box).pixels[None]
                except Exception as exc:  # its own request's 400/413/415/422
                    outcomes[i] = exc
                    continue
            images.append(pixels)
            decoded.append((i, row))
            row += len(pixels)
        if not images and not planned:
            return {}
        height, width = self._preparer.model.image_size
        pixels = np.concatenate(images) if images else np.zeros((0, height, width, 3), np.uint8)
        try:
            vectors = self._embed(pixels, [plan for _, plan in planned])
        except Exception as exc:
            if planned:
                raise
            for i, _ in decoded:
                outcomes[i] = exc
            return {}
        if self._on_batch is not None:
            self._on_batch(len(vectors), len(planned))
        rows: dict[int, np.ndarray] = {}
        for i, first in decoded:
            job = jobs[i]
            rows[i] = (
                vectors[first : first + len(job.images)]
                if isinstance(job, EmbedJob)
                else vectors[first]
            )
        for offset, (i, _) in enumerate(planned):
            rows[i] = vectors[row + offset]
        return rows


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
