"""The service's one configuration class.

Every field is read from a `LOOKALIKE_`-prefixed environment variable (or a
`.env` file) and has a default that works out of the box; the README's table is
generated from these descriptions, so they are the documentation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LOOKALIKE_", env_file=".env", extra="ignore", frozen=True
    )

    model_dir: Path = Field(
        Path("models/default"), description="Model directory to serve (encoder.keras + model.json)."
    )
    data_dir: Path = Field(
        Path("data"),
        description="Where the SQLite catalogue, index snapshot and image copies live.",
    )
    host: str = Field("127.0.0.1", description="Address uvicorn binds (0.0.0.0 in Docker).")
    port: int = Field(8000, ge=1, le=65535, description="Port uvicorn listens on.")
    api_key: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "API keys, comma-separated. Unset: the service is open and warns at start-up. "
            "Writes always need a key when any is set."
        ),
    )
    auth_reads: bool = Field(
        False, description="Also require a key for searches and reads (writes always need one)."
    )
    backend: Literal["local", "milvus"] = Field(
        "local", description="Catalogue backend: SQLite + FAISS in-process, or a Milvus collection."
    )
    index_type: Literal["flat", "hnsw"] = Field(
        "flat", description="FAISS index for the local backend: exact flat scan, or HNSW."
    )
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree M.")
    hnsw_ef_construction: int = Field(
        160,
        ge=8,
        description="HNSW efConstruction: a better-linked graph, so a smaller efSearch reaches "
        "the same recall, for a longer build. A snapshot graph built with less is rebuilt "
        "from SQLite at start-up.",
    )
    hnsw_ef_search: int = Field(64, ge=8, description="HNSW efSearch (recall vs speed).")
    max_file_bytes: int = Field(10_000_000, ge=1, description="Largest accepted upload file (413).")
    max_request_bytes: int = Field(
        50_000_000, ge=1, description="Largest accepted request body (413)."
    )
    max_files_per_request: int = Field(32, ge=1, description="Most files in one /index request.")
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest accepted image in pixels (decompression-bomb guard)."
    )
    keep_images: bool = Field(
        True, description="Keep a small copy of each indexed image (for reindex and /image)."
    )
    stored_image_size: int = Field(
        256, ge=16, le=2048, description="Longest side in pixels of the kept image copies."
    )
    duplicate_threshold: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="Score at which an upload counts as a copy of a catalogue item; unset = "
        "model.json's calibrated duplicate_threshold (else max(match_threshold, 0.95)).",
    )
    model_runtime: Literal["litert", "tensorflow"] = Field(
        "litert",
        description=(
            "How the service runs the encoder: `litert` converts encoder.keras once (cached "
            "under the data directory, checked against Keras) and falls back to TensorFlow "
            "for a model it cannot convert faithfully; `tensorflow` always uses TensorFlow."
        ),
    )
    embed_worker: bool = Field(
        True,
        description=(
            "Decode search uploads and run the model in a worker process of their own, out of "
            "the way of the HTTP side's GIL; false runs them on a thread of the service."
        ),
    )
    batch_max_size: int = Field(32, ge=1, description="Most images one encoder call embeds.")
    batch_max_wait_ms: float = Field(
        0.0,
        ge=0,
        description=(
            "Extra wait for more requests to join an encoder call; 0 = batch whatever queued "
            "while the previous call ran, never delaying a lone request."
        ),
    )
    threads: int = Field(
        0,
        ge=0,
        description="Threads for the model, FAISS, numpy's BLAS and decoding; "
        "0 = the cores present.",
    )
    log_format: Literal["plain", "json"] = Field("plain", description="Access-log line format.")
    log_level: str = Field("INFO", description="Python log level of the service's loggers.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS, comma-separated; empty = off."
    )
    snapshot_every: int = Field(
        1000, ge=1, description="Write a FAISS snapshot after this many changes (and at shutdown)."
    )
    milvus_uri: str = Field(
        "data/milvus.db",
        description="Milvus URI: http://host:19530 for a server, a .db path for Milvus Lite.",
    )
    milvus_collection: str = Field("lookalike", description="Milvus collection name.")
    milvus_token: str = Field("", description="Milvus token (user:password or API key).")
    milvus_index_type: str = Field(
        "HNSW", description="Milvus index type (FLAT, HNSW, IVF_FLAT, ...)."
    )
    milvus_index_params: str = Field(
        '{"M": 32, "efConstruction": 80}', description="Milvus index build parameters (JSON)."
    )
    milvus_search_params: str = Field('{"ef": 128}', description="Milvus search parameters (JSON).")

    @field_validator("api_key", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def thread_count(self) -> int:
        """`threads`, or the cores this process may run on when it is 0."""
        if self.threads:
            return self.threads
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1

    @property
    def database_path(self) -> Path:
        return self.data_dir / "catalog.sqlite3"
