"""The search page at GET /, in a real browser against a real server with keys on reads.

Debian's Chromium (installed by scripts/system-deps) is driven by Playwright from
PyPI; Playwright's own browser download is never used, so the test runs offline.
Screenshots land in test-artifacts/ for people to look at.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import image_bytes
from tests.live_server import LiveServer, live_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
# No network here: without these, Chromium stalls on updates, sync and QUIC probes.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
KEY = "page-test-key"
# Ids that break naive URL building: a "/", "?", "#", "%", non-ASCII, and dot segments
# a browser would normalise away if the "/" were left unencoded.
QUERY_ID = "shoes/röd sko #1?%"
OTHER_ID = "../boots/./brun"
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("search_page")
    env = {
        "LOOKALIKE_MODEL_DIR": str(model_dir),
        "LOOKALIKE_DATA_DIR": str(tmp / "data"),
        "LOOKALIKE_API_KEY": KEY,
        "LOOKALIKE_AUTH_READS": "true",
        "LOOKALIKE_THREADS": "2",
    }
    with live_server(env, tmp / "server.log") as live:
        answer = httpx.post(
            f"{live.url}/index",
            headers={"X-API-Key": KEY},
            files=[
                ("file", ("a.png", image_bytes(1), "image/png")),
                ("file", ("b.png", image_bytes(2), "image/png")),
            ],
            data={
                "id": [QUERY_ID, OTHER_ID],
                "metadata": [json.dumps({"name": "<b>red</b> shoe"}), json.dumps({"n": 2})],
            },
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        yield live


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files on disk, because the page's file chooser takes paths."""
    folder = tmp_path_factory.mktemp("uploads")
    paths = {"query": folder / "query.png", "notes": folder / "notes.txt"}
    paths["query"].write_bytes(image_bytes(1))
    paths["notes"].write_text("not an image\n")
    return paths


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with scripts/system-deps (as root)")
    with sync_playwright() as playwright:
        # launch() gives every run a fresh temporary profile (user-data-dir).
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, server: LiveServer) -> Iterator[Page]:
    context = browser.new_context(base_url=server.url, viewport={"width": 1100, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    tab.on(
        "console",
        lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    tab.goto("/")
    yield tab
    context.close()
    assert not problems, problems


def _enter_key(page: Page) -> None:
    page.get_by_label("API key").fill(KEY)
    page.get_by_label("API key").press("Enter")


def _drop(page: Page, target: str, path: Path) -> None:
    """Drag and drop a file from outside the page, as a user dragging from a file manager."""
    transfer = page.evaluate_handle(
        """([name, bytes]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, {type: "image/png"}));
            return transfer;
        }""",
        [path.name, list(path.read_bytes())],
    )
    page.dispatch_event(target, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(target, "drop", {"dataTransfer": transfer})


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_page_is_public_with_its_files_and_a_strict_policy(server: LiveServer) -> None:
    page = httpx.get(f"{server.url}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for name, kind in (("page.js", "javascript"), ("page.css", "css")):
        asset = httpx.get(f"{server.url}/static/{name}", timeout=10)
        assert asset.status_code == 200
        assert kind in asset.headers["content-type"]
        assert f"/static/{name}" in page.text
    assert httpx.get(f"{server.url}/static/..%2Fmain.py", timeout=10).status_code == 404
    # The page is public; the data behind it is not.
    assert httpx.get(f"{server.url}/index", timeout=10).json()["error"]["code"] == "unauthorized"


def test_search_shows_the_right_first_result_with_its_thumbnail(
    page: Page, uploads: dict[str, Path]
) -> None:
    _enter_key(page)
    page.get_by_text("2 items").wait_for()
    page.get_by_label("Query image").set_input_files(uploads["query"])
    page.get_by_label("Results (k)").fill("2")
    page.get_by_role("button", name="Search").click()

    results = page.locator("#results > li")
    results.nth(1).wait_for()
    assert results.count() == 2
    first = results.nth(0)
    assert first.locator(".result-id").inner_text() == QUERY_ID
    assert first.locator(".score").inner_text() == "score 1.0000"
    # Metadata is shown as text, not markup.
    assert first.locator("dd").inner_text() == "<b>red</b> shoe"
    assert results.nth(1).locator(".result-id").inner_text() == OTHER_ID
    for i in range(2):
        thumb = results.nth(i).locator("img.thumb")
        thumb.and_(page.locator("[src^='blob:']")).wait_for()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle()
        )
    assert first.get_by_role("img").get_attribute("alt") == f"Stored image of {QUERY_ID}"
    _shot(page, "search-page-results.png")

    page.reload()
    assert page.get_by_label("API key").input_value() == KEY, "key kept in localStorage"


def test_compare_an_image_with_itself_is_a_match(page: Page, uploads: dict[str, Path]) -> None:
    _enter_key(page)
    page.get_by_label("First image").set_input_files(uploads["query"])
    _drop(page, "#compare-drop-b", uploads["query"])
    assert page.get_by_label("Second image").evaluate("input => input.files[0].name") == "query.png"
    page.get_by_role("button", name="Compare").click()

    page.locator("#verdict").wait_for()
    assert page.locator("#verdict-text").inner_text().startswith("Match")
    assert page.locator("#verdict-score").inner_text() == "1.0000"
    assert page.locator("#verdict-threshold").inner_text() == "0.9000"
    _shot(page, "search-page-compare.png")


def test_api_errors_are_shown_with_message_and_code(
    page: Page, uploads: dict[str, Path], server: LiveServer
) -> None:
    page.get_by_label("Query image").set_input_files(uploads["query"])
    page.get_by_role("button", name="Search").click()
    error = page.locator("#search-error")
    error.wait_for()
    assert "unauthorized" in error.inner_text()
    assert "API key" in error.inner_text()

    _enter_key(page)
    page.get_by_label("Query image").set_input_files(uploads["notes"])
    page.get_by_role("button", name="Search").click()
    error.get_by_text("unsupported_media_type").wait_for()
    text = error.inner_text()
    assert "HTTP 415" in text
    message = httpx.post(
        f"{server.url}/search",
        headers={"X-API-Key": KEY},
        files={"file": ("notes.txt", uploads["notes"].read_bytes())},
        timeout=10,
    ).json()["error"]["message"]
    assert message in text
    _shot(page, "search-page-error.png")
