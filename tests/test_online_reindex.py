"""Reindex without downtime, and crashes in the middle of one, on real server processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from app.model_bundle import read_model_info
from tests.conftest import image_bytes, write_model_dir
from tests.live_server import ROOT, live_server, start_server


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reindex-models")
    return write_model_dir(root / "v1", seed=1), write_model_dir(root / "v2", seed=2)


def _fill(url: str, count: int) -> None:
    with httpx.Client(base_url=url, timeout=60) as c:
        for start in range(0, count, 16):
            files = [("file", (f"{n}.png", image_bytes(n))) for n in range(start, start + 16)]
            ids = [f"i{n}" for n in range(start, start + 16)]
            assert c.post("/index", files=files, data={"id": ids}).status_code == 200


def _consistent(c: httpx.Client, count: int) -> str:
    """The served model, after checking every item belongs to it and search works."""
    stats = c.get("/index").json()
    assert stats["count"] == count
    for n in (0, count // 2, count - 1):
        assert c.get(f"/index/i{n}").json()["model_id"] == stats["model_id"]
        r = c.post("/search", files={"file": ("q.png", image_bytes(n))}, data={"k": "1"})
        assert r.json()["results"][0]["id"] == f"i{n}"
    return str(stats["model_id"])


def test_reindex_while_serving(tmp_path: Path, models: tuple[Path, Path]) -> None:
    v1, v2 = models
    env = {"LOOKALIKE_MODEL_DIR": str(v1), "LOOKALIKE_DATA_DIR": str(tmp_path / "data")}
    with live_server(env, tmp_path / "server.log") as server:
        _fill(server.url, 64)
        statuses: list[int] = []
        stop = threading.Event()

        def keep_searching() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as c:
                while not stop.is_set():
                    r = c.post("/search", files={"file": ("q.png", image_bytes(3))})
                    statuses.append(r.status_code)

        searcher = threading.Thread(target=keep_searching)
        searcher.start()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "app", "reindex", "--model", str(v2)],
                cwd=ROOT,
                env={**os.environ, **env, "LOOKALIKE_PORT": str(server.port)},
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            stop.set()
            searcher.join()
        assert done.returncode == 0, done.stdout + done.stderr
        assert "online" in done.stdout
        assert statuses
        assert set(statuses) == {200}
        with httpx.Client(base_url=server.url, timeout=60) as c:
            assert _consistent(c, 64) == read_model_info(v2).model_id
            assert c.get("/index").json()["reindex"]["phase"] == "done"
            assert c.post("/admin/reindex", data={"model_dir": "/etc"}).status_code == 422
    # The catalogue remembers its model: a restart with the old setting serves v2.
    with (
        live_server(env, tmp_path / "again.log") as server,
        httpx.Client(base_url=server.url, timeout=60) as c,
    ):
        assert _consistent(c, 64) == read_model_info(v2).model_id
        assert "reindexed to" in server.output()


def test_kill_9_in_the_middle_of_a_reindex(tmp_path: Path, models: tuple[Path, Path]) -> None:
    v1, v2 = models
    env = {"LOOKALIKE_MODEL_DIR": str(v1), "LOOKALIKE_DATA_DIR": str(tmp_path / "data")}
    ids = {read_model_info(v1).model_id, read_model_info(v2).model_id}
    server = start_server(env, tmp_path / "first.log")
    try:
        _fill(server.url, 160)
        r = httpx.post(f"{server.url}/admin/reindex", data={"model_dir": str(v2)}, timeout=30)
        assert r.status_code == 202
        time.sleep(0.05)
    finally:
        server.kill()
    with (
        live_server(env, tmp_path / "second.log") as server,
        httpx.Client(base_url=server.url, timeout=60) as c,
    ):
        served = _consistent(c, 160)
        assert served in ids
        if served != read_model_info(v2).model_id:
            # Killed before the switch: run it again, to completion this time.
            assert c.post("/admin/reindex", data={"model_dir": str(v2)}).status_code == 202
            for _ in range(600):
                phase = c.get("/index").json()["reindex"]["phase"]
                if phase in ("done", "failed"):
                    break
                time.sleep(0.1)
            assert phase == "done"
            assert _consistent(c, 160) == read_model_info(v2).model_id
