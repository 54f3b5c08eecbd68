"""Products, regions, duplicates and facets, through HTTP against a real server."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import image_bytes
from tests.live_server import live_server


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("features")
    env = {"LOOKALIKE_MODEL_DIR": str(model_dir), "LOOKALIKE_DATA_DIR": str(root / "data")}
    with (
        live_server(env, root / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        yield client


def put(api: httpx.Client, data: bytes, item_id: str, **fields: str) -> httpx.Response:
    return api.post("/index", files={"file": ("x.png", data)}, data={"id": item_id, **fields})


def find(api: httpx.Client, data: bytes, **fields: str) -> list[dict]:
    r = api.post("/search", files={"file": ("q.png", data)}, data=fields)
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_products_group_search_and_go_together(api: httpx.Client) -> None:
    query = image_bytes(1000)
    # Twelve photos of one product all match the query best; grouping must look past them.
    for n in range(12):
        assert put(api, query, f"big-{n}", product_id="p-big").status_code == 200
    for n in range(3):
        assert put(api, image_bytes(1001 + n), f"other-{n}", product_id=f"p-{n}").status_code == 200
    assert put(api, image_bytes(1010), "loose").status_code == 200

    plain = find(api, query, k="3")
    assert [h["product_id"] for h in plain] == ["p-big"] * 3
    grouped = find(api, query, k="3", group_by="product")
    assert len(grouped) == 3
    assert grouped[0]["product_id"] == "p-big"
    assert grouped[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert len({h["product_id"] or h["id"] for h in grouped}) == 3

    product = api.get("/products/p-big").json()
    assert [i["id"] for i in product["items"]] == [f"big-{n}" for n in range(12)]
    deleted = api.delete("/products/p-big").json()
    assert sorted(deleted["deleted"]) == sorted(f"big-{n}" for n in range(12))
    assert api.get("/products/p-big").status_code == 404
    assert api.get("/index/big-3").status_code == 404
    assert all(h["product_id"] != "p-big" for h in find(api, query, k="20"))
    assert api.delete("/products/p-big").status_code == 404


def _side_by_side(left: bytes, right: bytes) -> bytes:
    a = np.array(Image.open(io.BytesIO(left)).convert("RGB"))
    b = np.array(Image.open(io.BytesIO(right)).convert("RGB"))
    out = io.BytesIO()
    Image.fromarray(np.concatenate([a, b], axis=1)).save(out, "PNG")
    return out.getvalue()


def test_search_by_a_region(api: httpx.Client) -> None:
    left, right = image_bytes(2001), image_bytes(2002)
    put(api, left, "region-left")
    put(api, right, "region-right")
    street = _side_by_side(left, right)  # 48 x 24 pixels
    for box in ("0.5,0,1,1", "24,0,48,24"):
        top = find(api, street, k="1", box=box)[0]
        assert top["id"] == "region-right", box
        assert top["score"] == pytest.approx(1.0, abs=1e-4)
    assert find(api, street, k="1", box="0,0,0.5,1")[0]["id"] == "region-left"
    same = api.post(
        "/similarity",
        files={"file_a": ("a.png", street), "file_b": ("b.png", right)},
        data={"box": "24,0,48,24"},
    ).json()
    assert same["score"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("box", "says"),
    [
        ("0,0,100,24", "outside"),
        ("5,5,5,10", "empty or inverted"),
        ("10,0,5,10", "empty or inverted"),
        ("1,2,3", "four numbers"),
        ("a,b,c,d", "four numbers"),
        ("-1,0,4,4", "negative"),
    ],
)
def test_invalid_boxes_are_422_saying_why(api: httpx.Client, box: str, says: str) -> None:
    r = api.post("/search", files={"file": ("q.png", image_bytes(1))}, data={"box": box})
    assert r.status_code == 422
    assert says in r.json()["error"]["message"]


def test_duplicates_are_reported_at_upload_and_policy_applies(api: httpx.Client) -> None:
    photo = image_bytes(3001)
    assert put(api, photo, "sku-17").json()["items"][0]["duplicates"] == []
    allowed = put(api, photo, "sku-18").json()["items"][0]
    assert allowed["status"] == "created"
    assert [d["id"] for d in allowed["duplicates"]] == ["sku-17"]
    assert allowed["duplicates"][0]["score"] == pytest.approx(1.0, abs=1e-4)

    skipped = put(api, photo, "sku-19", on_duplicate="skip").json()["items"][0]
    assert skipped["status"] == "skipped"
    assert {d["id"] for d in skipped["duplicates"]} == {"sku-17", "sku-18"}
    assert api.get("/index/sku-19").status_code == 404

    rejected = put(api, photo, "sku-20", on_duplicate="reject")
    assert rejected.status_code == 409
    assert rejected.json()["error"]["code"] == "duplicate"
    assert "sku-1" in rejected.json()["error"]["message"]
    # Re-uploading an item under its own id is not a duplicate of itself.
    again = put(api, image_bytes(3002), "solo")
    assert put(api, image_bytes(3002), "solo", on_duplicate="reject").status_code == 200
    assert again.status_code == 200


def test_duplicate_clusters_over_the_whole_catalogue(api: httpx.Client) -> None:
    for n in range(3):
        put(api, image_bytes(4001), f"dup-a{n}")
    for n in range(2):
        put(api, image_bytes(4002), f"dup-b{n}")
    body = api.get("/duplicates", params={"threshold": 0.99999}).json()
    clusters = [c["ids"] for c in body["clusters"]]
    assert ["dup-a0", "dup-a1", "dup-a2"] in clusters
    assert ["dup-b0", "dup-b1"] in clusters
    assert all(c["size"] == len(c["ids"]) for c in body["clusters"])
    sizes = [c["size"] for c in body["clusters"]]
    assert sizes == sorted(sizes, reverse=True)
    first = api.get("/duplicates", params={"threshold": 0.99999, "page_size": 1}).json()
    assert first["total"] == body["total"]
    assert len(first["clusters"]) == 1
    assert first["clusters"][0]["size"] == max(sizes)
    # A change to the catalogue is seen at once (the clusters are cached per version).
    put(api, image_bytes(4002), "dup-b2")
    again = api.get("/duplicates", params={"threshold": 0.99999}).json()
    assert ["dup-b0", "dup-b1", "dup-b2"] in [c["ids"] for c in again["clusters"]]


def test_facets_count_metadata_values(api: httpx.Client) -> None:
    for n, (category, sale) in enumerate(
        [("shoes", True), ("shoes", False), ("shoes", True), ("bags", True)]
    ):
        meta = json.dumps({"facet-category": category, "facet-sale": sale, "n": n})
        put(api, image_bytes(5000 + n), f"facet-{n}", metadata=meta)
    body = api.get("/index/facets", params={"key": "facet-category"}).json()
    assert body["values"] == [{"value": "shoes", "count": 3}, {"value": "bags", "count": 1}]
    sale = api.get("/index/facets", params={"key": "facet-sale"}).json()["values"]
    assert sale == [{"value": True, "count": 3}, {"value": False, "count": 1}]
    assert api.get("/index/facets", params={"key": "missing"}).json()["values"] == []
    assert api.get("/index/facets").status_code == 422
