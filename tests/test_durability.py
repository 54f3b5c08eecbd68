"""What survives restarts, crashes and model changes, on real processes where it matters."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.errors import ModelMismatch
from app.main import create_app
from app.model_bundle import read_model_info
from tests.conftest import backend_env, image_bytes, local_only
from tests.live_server import live_server, start_server


def _index(url: str, seed: int, item_id: str) -> httpx.Response:
    return httpx.post(
        f"{url}/index",
        files={"file": ("x.png", image_bytes(seed), "image/png")},
        data={"id": item_id, "metadata": f'{{"seed": {seed}}}'},
        timeout=30,
    )


def _top(client: TestClient | httpx.Client, seed: int) -> dict:
    r = client.post("/search", files={"file": ("q.png", image_bytes(seed))}, data={"k": "1"})
    assert r.status_code == 200, r.text
    return r.json()["results"][0]


def test_restart_keeps_the_catalogue(make_settings) -> None:
    with TestClient(create_app(make_settings())) as c:
        for seed in range(6):
            c.post("/index", files={"file": ("x.png", image_bytes(seed))}, data={"id": f"i{seed}"})
        c.delete("/index/i5")
    with TestClient(create_app(make_settings())) as c:
        assert c.get("/index").json()["count"] == 5
        assert _top(c, 2)["id"] == "i2"
        assert c.get("/index/i5").status_code == 404


@local_only
def test_snapshot_plus_replay_matches_sqlite(make_settings, data_dir: Path) -> None:
    settings = make_settings(snapshot_every=3)
    with TestClient(create_app(settings)) as c:
        for seed in range(4):
            c.post("/index", files={"file": ("x.png", image_bytes(seed))}, data={"id": f"i{seed}"})
    snapshot = {name: (data_dir / name).read_bytes() for name in ("index.faiss", "index.json")}
    with TestClient(create_app(settings)) as c:
        c.post("/index", files={"file": ("x.png", image_bytes(9))}, data={"id": "i1"})
        c.delete("/index/i0")
        c.post("/index", files={"file": ("x.png", image_bytes(7))}, data={"id": "new"})
    # As if the process died before snapshotting these changes: the next start must
    # load the old snapshot and replay the upsert, the delete and the insert from SQLite.
    for name, content in snapshot.items():
        (data_dir / name).write_bytes(content)
    with TestClient(create_app(settings)) as c:
        assert c.get("/index").json()["count"] == 4
        assert _top(c, 9)["id"] == "i1"
        assert _top(c, 9)["score"] == pytest.approx(1.0, abs=1e-4)
        assert _top(c, 7)["id"] == "new"
        ids = [h["id"] for h in c.get("/index/new/similar", params={"k": 10}).json()["results"]]
        assert sorted(ids) == ["i1", "i2", "i3"]


def test_a_different_model_is_refused(make_settings, other_model_dir: Path) -> None:
    with TestClient(create_app(make_settings())) as c:
        c.post("/index", files={"file": ("x.png", image_bytes(1))}, data={"id": "a"})
    app = create_app(make_settings(model_dir=other_model_dir))
    with pytest.raises(ModelMismatch, match="python -m app reindex"), TestClient(app):
        pass


@local_only
def test_a_different_model_is_refused_before_its_runtime_is_prepared(
    make_settings, data_dir: Path, other_model_dir: Path
) -> None:
    """The refusal must not wait for the model's LiteRT conversion (5-10 s on a new model)."""
    with TestClient(create_app(make_settings())) as c:
        c.post("/index", files={"file": ("x.png", image_bytes(1))}, data={"id": "a"})
    other_id = read_model_info(other_model_dir).model_id
    app = create_app(make_settings(model_dir=other_model_dir))
    with pytest.raises(ModelMismatch), TestClient(app):
        pass
    assert not list((data_dir / "litert").glob(f"{other_id}*")), "the refused model was prepared"


@local_only
def test_write_survives_kill_9(tmp_path: Path, model_dir: Path, backend: str) -> None:
    """SQLite's durability under kill -9; with Milvus that is the Milvus server's job."""
    env = {"LOOKALIKE_MODEL_DIR": str(model_dir), "LOOKALIKE_DATA_DIR": str(tmp_path / "data")}
    server = start_server(env, tmp_path / "first.log")
    try:
        for seed in range(3):
            assert _index(server.url, seed, f"i{seed}").status_code == 200
        assert httpx.delete(f"{server.url}/index/i1").status_code == 200
        worker = int(re.findall(r"embedding worker (\d+) ready", server.output())[-1])
    finally:
        server.kill()
    assert not (tmp_path / "data" / "index.faiss").exists(), "kill -9 must not snapshot"
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker), "the embedding worker outlived its service"
    with (
        live_server(env, tmp_path / "second.log") as server,
        httpx.Client(base_url=server.url) as c,
    ):
        assert c.get("/index").json()["count"] == 2
        assert _top(c, 2)["id"] == "i2"
        assert c.get("/index/i1").status_code == 404


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@local_only
def test_server_refuses_to_start_on_a_model_mismatch(
    tmp_path: Path, model_dir: Path, other_model_dir: Path, backend: str
) -> None:
    """The process exits with the message; test_a_different_model_is_refused covers Milvus."""
    data = str(tmp_path / "data")
    with live_server(
        {"LOOKALIKE_MODEL_DIR": str(model_dir), "LOOKALIKE_DATA_DIR": data}, tmp_path / "a.log"
    ) as server:
        assert _index(server.url, 1, "a").status_code == 200
    server = start_server(
        {"LOOKALIKE_MODEL_DIR": str(other_model_dir), "LOOKALIKE_DATA_DIR": data},
        tmp_path / "b.log",
    )
    server.process.wait(timeout=60)
    assert server.process.returncode != 0
    assert "python -m app reindex" in server.output()


def test_concurrent_writes_and_searches_stay_consistent(
    tmp_path: Path, model_dir: Path, backend: str
) -> None:
    data = tmp_path / "data"
    env = {
        "LOOKALIKE_MODEL_DIR": str(model_dir),
        "LOOKALIKE_DATA_DIR": str(data),
        **backend_env(backend, data),
    }
    errors: list[str] = []
    with live_server(env, tmp_path / "server.log") as server:

        def worker(n: int) -> None:
            with httpx.Client(base_url=server.url, timeout=60) as c:
                for i in range(8):
                    item = f"w{n}-{i}"
                    r = c.post(
                        "/index",
                        files={"file": ("x.png", image_bytes(n * 100 + i))},
                        data={"id": item},
                    )
                    if r.status_code != 200:
                        errors.append(r.text)
                    if i % 2 and c.delete(f"/index/w{n}-{i - 1}").status_code != 200:
                        errors.append(f"delete w{n}-{i - 1}")
                    if (
                        c.post(
                            "/search", files={"file": ("q.png", image_bytes(i))}, data={"k": "5"}
                        ).status_code
                        != 200
                    ):
                        errors.append("search")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with httpx.Client(base_url=server.url, timeout=60) as c:
            assert c.get("/index").json()["count"] == 24
            for n in range(6):
                for i in range(8):
                    found = _top(c, n * 100 + i)
                    if i % 2:
                        assert found["id"] == f"w{n}-{i}"
                        assert found["score"] == pytest.approx(1.0, abs=1e-4)
                    else:
                        assert found["id"] != f"w{n}-{i}"
            everything = c.post(
                "/search", files={"file": ("q.png", image_bytes(0))}, data={"k": "100"}
            ).json()["results"]
            assert len(everything) == 24
            assert all(int(h["id"].split("-")[1]) % 2 == 1 for h in everything)
