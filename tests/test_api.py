"""Every endpoint through HTTP against an app with a real encoder, SQLite and FAISS."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import image_bytes, jpeg_cases


def index(client: TestClient, seed: int, item_id: str | None, **fields: str):
    data = {"id": item_id} if item_id is not None else {}
    data.update(fields)
    return client.post(
        "/index", files={"file": (f"{seed}.png", image_bytes(seed), "image/png")}, data=data
    )


def search(client: TestClient, seed: int, **fields: object):
    return client.post(
        "/search",
        files={"file": ("q.png", image_bytes(seed), "image/png")},
        data={k: str(v) for k, v in fields.items()},
    )


def test_index_then_search_finds_the_same_image_first(client: TestClient) -> None:
    for seed in range(5):
        r = index(client, seed, f"sku-{seed}", metadata=json.dumps({"n": seed}))
        assert r.status_code == 200, r.text
        assert r.json()["items"][0] == {
            "id": f"sku-{seed}",
            "filename": f"{seed}.png",
            "status": "created",
            "error": None,
            "duplicates": [],
        }
    r = search(client, 3, k=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"][0]["id"] == "sku-3"
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert body["results"][0]["metadata"] == {"n": 3}
    scores = [hit["score"] for hit in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert len(scores) == 5


def test_same_id_replaces_the_item(client: TestClient) -> None:
    assert index(client, 1, "sku-1", metadata='{"name": "red shoe"}').status_code == 200
    r = index(client, 2, "sku-1", metadata='{"name": "blue shoe"}')
    assert r.json()["items"][0]["status"] == "updated"
    assert client.get("/index").json()["count"] == 1
    assert client.get("/index/sku-1").json()["metadata"] == {"name": "blue shoe"}
    top = search(client, 2, k=1).json()["results"][0]
    assert top["id"] == "sku-1"
    assert top["score"] == pytest.approx(1.0, abs=1e-4)


def test_similarity_scores_and_matches(client: TestClient) -> None:
    same = client.post(
        "/similarity",
        files={"file_a": ("a.png", image_bytes(7)), "file_b": ("b.png", image_bytes(7))},
    ).json()
    assert same["score"] == pytest.approx(1.0, abs=1e-4)
    assert same["match"] is True
    assert same["threshold"] == 0.9
    other = client.post(
        "/similarity",
        files={"file_a": ("a.png", image_bytes(7)), "file_b": ("b.png", image_bytes(8))},
        data={"threshold": "1.0"},
    ).json()
    assert other["threshold"] == 1.0
    assert other["score"] < 0.9999
    assert other["match"] is False


def test_health_readiness_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    index(client, 1, "a")
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["items"] == 1
    search(client, 1, k=1)
    text = client.get("/metrics").text
    assert 'lookalike_requests_total{method="POST",route="/search",status="200"} 1.0' in text
    assert "lookalike_index_items 1.0" in text
    assert "lookalike_embed_batch_size_count" in text


def test_undecodable_upload_is_a_400_and_the_server_carries_on(client: TestClient) -> None:
    r = client.post("/index", files={"file": ("x.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_image"
    r = client.post("/search", files={"file": ("x.txt", b"hello, I am text")})
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "unsupported_media_type"
    assert index(client, 1, "fine").status_code == 200
    assert client.get("/index").json()["count"] == 1


def test_unknown_ids_are_404_and_delete_removes(client: TestClient) -> None:
    assert client.get("/index/nope").status_code == 404
    assert client.delete("/index/nope").json()["error"]["code"] == "not_found"
    index(client, 1, "a")
    index(client, 2, "b")
    assert client.delete("/index/a").status_code == 200
    assert client.get("/index/a").status_code == 404
    ids = [h["id"] for h in search(client, 1, k=10).json()["results"]]
    assert ids == ["b"]


def test_item_details_and_stored_copy(client: TestClient) -> None:
    index(client, 4, "sku/4 ü", metadata='{"colour": "red"}')
    item = client.get("/index/sku/4 ü").json()
    assert item["id"] == "sku/4 ü"
    assert item["metadata"] == {"colour": "red"}
    assert item["has_image"] is True
    assert item["created_at"].endswith("Z")
    image = client.get("/index/sku/4 ü/image")
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    assert image.content[:2] == b"\xff\xd8"


def test_more_like_this_excludes_the_item_itself(client: TestClient) -> None:
    for seed in range(4):
        index(client, seed, f"i{seed}")
    body = client.get("/index/i0/similar", params={"k": 2}).json()
    assert len(body["results"]) == 2
    assert "i0" not in [h["id"] for h in body["results"]]
    assert client.get("/index/zzz/similar").status_code == 404


def test_filter_still_returns_k_matching_results(client: TestClient) -> None:
    for seed in range(12):
        category = "shoes" if seed % 4 == 0 else "bags"
        index(client, seed, f"i{seed}", metadata=json.dumps({"category": category, "n": seed}))
    body = search(client, 1, k=3, filter='{"category": "shoes"}').json()
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert {h["metadata"]["category"] for h in body["results"]} == {"shoes"}
    assert len(body["results"]) == 3
    numeric = search(client, 1, k=5, filter='{"n": 8}').json()["results"]
    assert [h["id"] for h in numeric] == ["i8"]
    text = search(client, 1, k=5, filter='{"n": "8"}').json()["results"]
    assert text == []
    bad = search(client, 1, k=5, filter='{"n": [1, 2]}')
    assert bad.status_code == 422
    huge = search(client, 1, k=5, filter='{"n": 123456789012345678901234567890}')
    assert huge.status_code == 422


def test_min_score_and_k_limits(client: TestClient) -> None:
    for seed in range(3):
        index(client, seed, f"i{seed}")
    body = search(client, 0, k=3, min_score=0.9999).json()
    assert [h["id"] for h in body["results"]] == ["i0"]
    assert search(client, 0, k=0).status_code == 422
    assert search(client, 0, k=101).json()["error"]["code"] == "invalid_field"


def test_many_files_in_one_request_with_one_bad(client: TestClient) -> None:
    files = [
        ("file", ("a.png", image_bytes(1), "image/png")),
        ("file", ("bad.png", b"garbage", "image/png")),
        ("file", ("c.png", image_bytes(3), "image/png")),
    ]
    r = client.post("/index", files=files, data={"id": ["a", "b", "c"]})
    assert r.status_code == 207
    body = r.json()
    assert body["indexed"] == 2
    assert body["failed"] == 1
    assert [i["status"] for i in body["items"]] == ["created", "error", "created"]
    assert body["items"][1]["error"]["code"] == "unsupported_media_type"
    assert client.get("/index").json()["count"] == 2


def test_id_is_derived_from_bytes_when_missing(client: TestClient) -> None:
    first = index(client, 5, None).json()["items"][0]
    again = index(client, 5, None).json()["items"][0]
    assert first["id"].startswith("sha256:")
    assert first["id"] == again["id"]
    assert again["status"] == "updated"
    assert client.get("/index").json()["count"] == 1


@pytest.mark.parametrize(
    ("item_id", "metadata"),
    [
        ("", "{}"),
        ("x" * 257, "{}"),
        ("bad\nid", "{}"),
        ("ok", "[1]"),
        ("ok", "{nope"),
        ("ok", '{"n": 99999999999999999999}'),
    ],
)
def test_invalid_fields_are_422(client: TestClient, item_id: str, metadata: str) -> None:
    r = index(client, 1, item_id, metadata=metadata)
    assert r.status_code == 422
    assert set(r.json()["error"]) == {"code", "message"}


def test_api_keys(make_settings) -> None:
    app = create_app(make_settings(api_key="k1,k2"))
    with TestClient(app) as c:
        assert index(c, 1, "a").status_code == 401
        c.headers["X-API-Key"] = "wrong"
        assert index(c, 1, "a").status_code == 403
        c.headers["X-API-Key"] = "k2"
        assert index(c, 1, "a").status_code == 200
        del c.headers["X-API-Key"]
        assert search(c, 1, k=1).status_code == 200
        c.headers["Authorization"] = "Bearer k1"
        assert c.delete("/index/a").status_code == 200


def test_request_size_limit(make_settings) -> None:
    with TestClient(create_app(make_settings(max_request_bytes=2000))) as c:
        big = image_bytes(1, size=(256, 256), fmt="BMP")
        r = c.post("/search", files={"file": ("big.bmp", big)})
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "payload_too_large"
        assert search(c, 1, k=1).status_code == 200


def test_openapi_documents_the_endpoints(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/index", "/search", "/similarity", "/healthz", "/readyz", "/index/{item_id}"):
        assert path in spec["paths"], path
    search_op = spec["paths"]["/search"]["post"]
    assert {"400", "413", "415", "422"} <= set(search_op["responses"])
    assert client.get("/docs").status_code == 200


def test_request_id_is_echoed(client: TestClient) -> None:
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len(client.get("/healthz").headers["x-request-id"]) == 32


def _embed_batches(client: TestClient) -> tuple[float, float]:
    """(encoder calls, images embedded) so far, from /metrics."""
    values = {}
    for line in client.get("/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("lookalike_embed_batch_size_count", "lookalike_embed_batch_size_sum"):
            values[name] = float(value)
    return values["lookalike_embed_batch_size_count"], values["lookalike_embed_batch_size_sum"]


def test_concurrent_searches_share_one_encoder_call_and_get_their_own_results(
    make_settings,
) -> None:
    # A long wait and a batch limit of exactly the requests sent: they meet in one call.
    settings = make_settings(batch_max_wait_ms=2000, batch_max_size=6)
    with TestClient(create_app(settings)) as c:
        for seed in range(5):
            category = "even" if seed % 2 == 0 else "odd"
            index(c, seed, f"i{seed}", metadata=json.dumps({"category": category}))
        calls_before, images_before = _embed_batches(c)

        def one(seed: int):
            if seed == 5:  # not an image: fails alone, in the same batch as the others
                return c.post("/search", files={"file": ("x.txt", b"hello, I am text")})
            fields: dict[str, object] = {"k": seed + 1}
            if seed == 4:
                fields["filter"] = '{"category": "odd"}'
            return search(c, seed, **fields)

        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(one, range(6)))
        calls_after, images_after = _embed_batches(c)

    for seed, r in enumerate(responses[:4]):
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert results[0]["id"] == f"i{seed}"
        assert results[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert len(results) == seed + 1
    filtered = responses[4].json()["results"]
    assert {h["metadata"]["category"] for h in filtered} == {"odd"}
    assert len(filtered) == 2
    assert responses[5].status_code == 415
    assert images_after - images_before == 5
    assert calls_after - calls_before < 5, "concurrent searches were embedded one by one"


def test_searches_answer_the_same_from_the_worker_process_and_from_a_thread(
    make_settings,
) -> None:
    """embed_worker changes where uploads are decoded and embedded, never what they find."""
    cases = jpeg_cases()
    names = ["photo 1/4 scale", "greyscale", "EXIF orientation 6", "smaller than the model"]
    answers = []
    for in_worker in (True, False):
        settings = make_settings(
            embed_worker=in_worker, batch_max_wait_ms=2000, batch_max_size=len(names)
        )
        with TestClient(create_app(settings)) as c:
            files = [("file", (f"{n}.jpg", cases[name])) for n, name in enumerate(names)]
            ids = [f"j{n}" for n in range(len(names))]
            r = c.post("/index", files=files, data={"id": ids})  # one model call
            assert r.status_code == 200, r.text

            def one(name: str, c: TestClient = c):
                return c.post("/search", files={"file": ("q.jpg", cases[name])}, data={"k": "4"})

            with ThreadPoolExecutor(len(names)) as pool:
                responses = list(pool.map(one, names))
            found = []
            for n, r in enumerate(responses):
                assert r.status_code == 200, r.text
                results = r.json()["results"]
                assert results[0]["id"] == f"j{n}"
                assert results[0]["score"] == pytest.approx(1.0, abs=1e-6)
                found.append([(h["id"], h["score"]) for h in results])
            answers.append(found)
            metrics = c.get("/metrics").text
            assert _metric(metrics, "lookalike_embed_worker_restarts_total") == 0
            assert _metric(metrics, "lookalike_embed_batch_size_count") == 2
    assert answers[0] == answers[1]


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_search_fields_are_validated_like_any_form_and_documented(client: TestClient) -> None:
    """/search reads its body in one pass (app/routes/form_body.py); nothing about it shows."""
    image = ("q.png", image_bytes(1), "image/png")
    r = client.post("/search", files={"file": image}, data={"k": "many", "min_score": "2"})
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "k: Input should be a valid integer" in message
    assert "min_score: Input should be less than or equal to 1" in message
    r = client.post("/search", data={"k": "3"})
    assert r.status_code == 422
    assert r.json()["error"]["message"] == "file: Field required"
    r = client.post("/search", files={"file": image, "k": ("k.txt", b"3", "text/plain")})
    assert r.status_code == 422
    assert "k: Input should be a text field" in r.json()["error"]["message"]
    r = client.post("/search", files={"file": image}, data={"k": "2", "unknown": "ignored"})
    assert r.status_code == 200, r.text
    assert r.json()["k"] == 2

    body = client.get("/openapi.json").json()["paths"]["/search"]["post"]["requestBody"]
    schema = body["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["file"]
    assert schema["properties"]["file"]["format"] == "binary"
    assert schema["properties"]["k"]["minimum"] == 1
    assert schema["properties"]["k"]["maximum"] == 100
    assert set(schema["properties"]) == {"file", "k", "min_score", "filter", "group_by", "box"}
