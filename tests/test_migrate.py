"""`python -m app migrate --to milvus`: a local catalogue, copied, answers the same on Milvus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.catalog import NewItem
from app.cli import main
from app.config import Settings
from app.errors import ModelMismatch
from app.main import create_app
from app.migration import migrate_to_milvus
from app.milvus_catalog import MilvusCatalog
from tests.conftest import backend_env, image_bytes, local_only

pytestmark = local_only  # the source is always the local backend


@pytest.fixture
def milvus_env(data_dir: Path) -> Iterator[dict[str, str]]:
    # The default HNSW index, as a deployment would use it.
    env = {
        key: value
        for key, value in backend_env("milvus", data_dir).items()
        if "INDEX" not in key and "SEARCH" not in key
    }
    yield env
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(env["LOOKALIKE_MILVUS_URI"])


def milvus_settings(make_settings, env: dict[str, str], **overrides: object) -> Settings:
    fields = {key.removeprefix("LOOKALIKE_").lower(): value for key, value in env.items()}
    return make_settings(**fields, **overrides)


def fill_local(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        for seed in range(12):
            r = c.post(
                "/index",
                files={"file": ("x.png", image_bytes(seed))},
                data={
                    "id": f"sku-{seed}" if seed != 3 else 'odd "id" \\ ü',
                    "metadata": json.dumps({"category": ["shoes", "bags"][seed % 2], "n": seed}),
                    "product_id": f"p{seed // 3}",
                },
            )
            assert r.status_code == 200, r.text
        assert c.delete("/index/sku-5").status_code == 200


def answers(c: TestClient) -> dict[str, object]:
    """Everything a client can observe of the catalogue, for comparing two backends."""
    out: dict[str, object] = {"count": c.get("/index").json()["count"]}
    for seed in (0, 3, 7, 11, 42):
        for fields in ({"k": "5"}, {"k": "3", "filter": '{"category": "bags"}'}):
            r = c.post("/search", files={"file": ("q.png", image_bytes(seed))}, data=fields)
            assert r.status_code == 200, r.text
            hits = r.json()["results"]
            out[f"search {seed} {fields}"] = [(h["id"], round(h["score"], 4)) for h in hits]
    for item in ("sku-0", 'odd "id" \\ ü', "sku-11", "sku-5"):
        r = c.get(f"/index/{item}")
        out[f"item {item}"] = r.json() if r.status_code == 200 else r.status_code
        out[f"image {item}"] = c.get(f"/index/{item}/image").content
    return out


def test_a_migrated_catalogue_answers_the_same_searches(
    make_settings, milvus_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    local = make_settings()
    fill_local(local)
    with TestClient(create_app(local)) as c:
        before = answers(c)
    for key, value in {
        **milvus_env,
        "LOOKALIKE_DATA_DIR": str(local.data_dir),
        "LOOKALIKE_MODEL_DIR": str(local.model_dir),
    }.items():
        monkeypatch.setenv(key, value)
    assert main(["migrate", "--to", "milvus", "--batch-size", "4"]) == 0
    with TestClient(create_app(milvus_settings(make_settings, milvus_env))) as c:
        assert c.get("/index").json()["backend"] == "milvus"
        after = answers(c)
    assert after == before


def test_migration_resumes_and_catches_up(make_settings, milvus_env: dict[str, str]) -> None:
    local = make_settings()
    fill_local(local)
    target = milvus_settings(make_settings, milvus_env)
    first = migrate_to_milvus(target, batch_size=5)
    assert (first.total, first.copied, first.skipped) == (11, 11, 0)
    # As if the first run had stopped early, and the shop had changed an item since.
    milvus = MilvusCatalog(target, model_id=first.model_id, embedding_dim=8)
    assert milvus.delete("sku-10")
    assert milvus.delete("sku-11")
    milvus.close()
    with TestClient(create_app(local)) as c:
        c.post("/index", files={"file": ("x.png", image_bytes(99))}, data={"id": "sku-0"})
    again = migrate_to_milvus(target, batch_size=5)
    assert (again.copied, again.skipped) == (3, 8)
    assert migrate_to_milvus(target).copied == 0
    with TestClient(create_app(target)) as c:
        assert c.get("/index").json()["count"] == 11
        top = c.post("/search", files={"file": ("q.png", image_bytes(99))}, data={"k": "1"})
        assert top.json()["results"][0]["id"] == "sku-0"


def test_a_collection_of_another_model_is_refused(
    make_settings, milvus_env: dict[str, str]
) -> None:
    local = make_settings()
    fill_local(local)
    target = milvus_settings(make_settings, milvus_env)
    other = MilvusCatalog(target, model_id="f" * 64, embedding_dim=8)
    other.upsert([NewItem(id="theirs", embedding=np.eye(8, dtype=np.float32)[0])])
    other.close()
    with pytest.raises(ModelMismatch, match="another collection"):
        migrate_to_milvus(target)
    check = MilvusCatalog(target, model_id="f" * 64, embedding_dim=8)
    assert check.stats().count == 1
    check.close()
