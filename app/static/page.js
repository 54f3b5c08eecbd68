// Lookalike search page: plain browser JavaScript over the public API, no build step.
//
// Everything shown from the API (ids, metadata, error messages) goes into the page
// through textContent or element properties, never as markup: ids and metadata are
// whatever uploaders chose. The Content-Security-Policy the server sends backs that up.
"use strict";

(() => {
  const KEY_STORAGE = "lookalike.apiKey";
  const $ = (id) => document.getElementById(id);

  // ---- API access -------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function loadKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return ""; // storage disabled: the key then lives in the field only
    }
  }

  function saveKey(key) {
    try {
      if (key) localStorage.setItem(KEY_STORAGE, key);
      else localStorage.removeItem(KEY_STORAGE);
    } catch {
      // storage disabled; nothing to keep
    }
  }

  function authHeaders() {
    const key = $("api-key").value.trim();
    return key ? { "X-API-Key": key } : {};
  }

  // Ids are any Unicode and may contain "/", "?", "#", "%" or be "a/../b"; encoding
  // the whole id (its "/" as %2F) keeps it one path segment, so the browser cannot
  // normalise dot segments away, and the server's {item_id:path} gets it back intact.
  // Only "." and ".." stay dot segments even when percent-encoded (the URL standard
  // treats "%2e" as "."), so no URL reaches those two ids' images.
  function imagePath(id) {
    if (id === "." || id === "..") return null;
    return `/index/${encodeURIComponent(id)}/image`;
  }

  async function errorFrom(response) {
    let code = `http_${response.status}`;
    let message = response.statusText || "request failed";
    try {
      const body = await response.json();
      if (body && body.error) {
        code = String(body.error.code);
        message = String(body.error.message);
      }
    } catch {
      // not our JSON error shape (a proxy's page, say): keep the HTTP status text
    }
    return new ApiError(response.status, code, message);
  }

  async function request(method, path, body) {
    let response;
    try {
      response = await fetch(path, { method, body, headers: authHeaders() });
    } catch (exc) {
      throw new ApiError(0, "network_error", `could not reach the service (${exc.message})`);
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  // ---- small DOM helpers ------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function showError(box, err) {
    box.replaceChildren();
    box.append(el("strong", "", "Error: "), el("span", "error-message", err.message), " ");
    const where = err.status ? `HTTP ${err.status}, ` : "";
    const code = el("span", "error-code");
    code.append("(", where, el("code", "", err.code), ")");
    box.append(code);
    if (err.status === 401 || err.status === 403) {
      box.append(el("p", "hint", "Enter a valid API key at the top of the page."));
    }
    box.hidden = false;
  }

  function clearError(box) {
    box.replaceChildren();
    box.hidden = true;
  }

  function formatScore(score) {
    return Number(score).toFixed(4);
  }

  // Object URLs pin their blobs in memory until revoked; each view tracks its own.
  class UrlBag {
    constructor() {
      this.urls = [];
    }
    add(blob) {
      const url = URL.createObjectURL(blob);
      this.urls.push(url);
      return url;
    }
    clear() {
      this.urls.forEach((url) => URL.revokeObjectURL(url));
      this.urls = [];
    }
  }

  // Only the newest request of a view may draw, however the answers arrive.
  function latestOnly() {
    let counter = 0;
    return () => {
      const mine = ++counter;
      return () => mine === counter;
    };
  }

  // ---- catalogue statistics ---------------------------------------------------

  const nextStats = latestOnly();

  async function refreshStats() {
    const current = nextStats();
    const target = $("stats");
    try {
      const stats = await (await request("GET", "/index")).json();
      if (!current()) return;
      const model = stats.model_id ? stats.model_id.slice(0, 12) : "none yet";
      const items = `${stats.count} item${stats.count === 1 ? "" : "s"}`;
      target.textContent =
        `${items} · model ${model} · ${stats.embedding_dim}-dimensional embeddings · ` +
        `${stats.backend} backend, ${stats.index_type} index`;
      target.title = stats.model_id || "";
      target.classList.remove("error-inline");
    } catch (err) {
      if (!current()) return;
      target.textContent = `Statistics unavailable: ${err.message} (${err.code})`;
      target.title = "";
      target.classList.add("error-inline");
    }
  }

  // ---- picking and dropping images ---------------------------------------------

  function wireImageInput(dropZone, input, preview, bag) {
    const showPreview = () => {
      bag.clear();
      const file = input.files && input.files[0];
      if (file && file.type.startsWith("image/")) {
        preview.src = bag.add(file);
        preview.alt = `Chosen image: ${file.name}`;
        preview.hidden = false;
      } else {
        preview.removeAttribute("src");
        preview.alt = "";
        preview.hidden = true;
      }
    };
    input.addEventListener("change", showPreview);
    dropZone.addEventListener("dragover", (event) => {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      dropZone.classList.add("dragging");
    });
    dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
    dropZone.addEventListener("drop", (event) => {
      event.preventDefault();
      dropZone.classList.remove("dragging");
      const files = event.dataTransfer.files;
      if (!files || files.length === 0) return;
      const one = new DataTransfer();
      one.items.add(files[0]);
      input.files = one.files;
      showPreview();
      input.focus();
    });
  }

  // ---- search -----------------------------------------------------------------

  const searchUrls = new UrlBag();
  const thumbUrls = new UrlBag();
  const nextSearch = latestOnly();

  function metadataList(metadata) {
    const keys = Object.keys(metadata || {});
    if (keys.length === 0) return el("p", "muted", "no metadata");
    const list = el("dl", "metadata");
    for (const key of keys) {
      const value = metadata[key];
      list.append(
        el("dt", "", key),
        el("dd", "", typeof value === "string" ? value : JSON.stringify(value)),
      );
    }
    return list;
  }

  async function loadThumbnail(id, img, current) {
    try {
      const path = imagePath(id);
      if (path === null) throw new ApiError(0, "id_not_addressable", "no URL can name this id");
      const blob = await (await request("GET", path)).blob();
      if (!current()) return;
      img.src = thumbUrls.add(blob);
    } catch (err) {
      if (!current()) return;
      const missing = el("span", "no-thumb", `no image (${err.code})`);
      missing.title = err.message;
      img.replaceWith(missing);
    }
  }

  function renderResults(hits, current) {
    const list = $("results");
    thumbUrls.clear();
    list.replaceChildren();
    hits.forEach((hit, index) => {
      const item = el("li", "result");
      item.dataset.id = hit.id;
      const figure = el("figure");
      const img = el("img", "thumb");
      img.alt = `Stored image of ${hit.id}`;
      img.width = 96;
      img.height = 96;
      figure.append(img);
      const caption = el("figcaption");
      caption.append(
        el("span", "rank", `#${index + 1}`),
        el("span", "result-id", hit.id),
        el("span", "score", `score ${formatScore(hit.score)}`),
      );
      figure.append(caption);
      item.append(figure, metadataList(hit.metadata));
      list.append(item);
      loadThumbnail(hit.id, img, current);
    });
  }

  async function search(event) {
    event.preventDefault();
    const form = $("search-form");
    const status = $("search-status");
    const errorBox = $("search-error");
    const current = nextSearch();
    const body = new FormData();
    body.append("file", $("search-file").files[0]);
    body.append("k", $("search-k").value);
    const minScore = $("search-min-score").value.trim();
    if (minScore !== "") body.append("min_score", minScore);
    const filter = $("search-filter").value.trim();
    if (filter !== "") body.append("filter", filter);

    clearError(errorBox);
    status.textContent = "Searching…";
    form.setAttribute("aria-busy", "true");
    try {
      const answer = await (await request("POST", "/search", body)).json();
      if (!current()) return;
      const n = answer.results.length;
      status.textContent =
        n === 0
          ? "No matches (try a lower minimum score or another filter)."
          : `${n} match${n === 1 ? "" : "es"}, best first (${answer.took_ms} ms on the server).`;
      renderResults(answer.results, current);
    } catch (err) {
      if (!current()) return;
      status.textContent = "";
      thumbUrls.clear();
      $("results").replaceChildren();
      showError(errorBox, err);
    } finally {
      if (current()) form.removeAttribute("aria-busy");
    }
  }

  // ---- compare ----------------------------------------------------------------

  const compareUrlsA = new UrlBag();
  const compareUrlsB = new UrlBag();
  const nextCompare = latestOnly();

  async function compare(event) {
    event.preventDefault();
    const form = $("compare-form");
    const status = $("compare-status");
    const errorBox = $("compare-error");
    const verdict = $("verdict");
    const current = nextCompare();
    const body = new FormData();
    body.append("file_a", $("compare-file-a").files[0]);
    body.append("file_b", $("compare-file-b").files[0]);
    const threshold = $("compare-threshold").value.trim();
    if (threshold !== "") body.append("threshold", threshold);

    clearError(errorBox);
    verdict.hidden = true;
    status.textContent = "Comparing…";
    form.setAttribute("aria-busy", "true");
    try {
      const answer = await (await request("POST", "/similarity", body)).json();
      if (!current()) return;
      status.textContent = "";
      const text = $("verdict-text");
      text.textContent = answer.match ? "Match: these look like the same thing" : "No match";
      verdict.classList.toggle("match", answer.match);
      verdict.classList.toggle("no-match", !answer.match);
      $("verdict-score").textContent = formatScore(answer.score);
      $("verdict-threshold").textContent = formatScore(answer.threshold);
      verdict.hidden = false;
    } catch (err) {
      if (!current()) return;
      status.textContent = "";
      showError(errorBox, err);
    } finally {
      if (current()) form.removeAttribute("aria-busy");
    }
  }

  // ---- start ------------------------------------------------------------------

  function useKey() {
    saveKey($("api-key").value.trim());
    refreshStats();
  }

  function start() {
    $("api-key").value = loadKey();
    $("api-key").addEventListener("change", useKey);
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      useKey();
    });
    $("key-clear").addEventListener("click", () => {
      $("api-key").value = "";
      useKey();
    });
    $("stats-refresh").addEventListener("click", refreshStats);

    wireImageInput($("search-drop"), $("search-file"), $("search-preview"), searchUrls);
    wireImageInput($("compare-drop-a"), $("compare-file-a"), $("compare-preview-a"), compareUrlsA);
    wireImageInput($("compare-drop-b"), $("compare-file-b"), $("compare-preview-b"), compareUrlsB);
    // A file dropped beside a drop zone would otherwise replace the page with it.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());

    $("search-form").addEventListener("submit", search);
    $("compare-form").addEventListener("submit", compare);
    refreshStats();
  }

  start();
})();
