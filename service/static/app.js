// The lookalike search page: plain DOM, no build step. Talks to the JSON API under /v1.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  collections: [],   // GET v1/collections
  collection: null,  // the chosen one's name
  chosenFile: null,  // the image that image search and classification use
  query: null,       // the last search: {kind: "text"|"image"|"similar", text, file, id, label}
  offset: 0,         // results shown so far for that search
  item: null,        // the hit whose details are open
};

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").classList.toggle("error", isError);
}

function withCollection(url) {
  return state.collection ? `${url}${url.includes("?") ? "&" : "?"}collection=${encodeURIComponent(state.collection)}` : url;
}

async function call(url, options) {
  const response = await fetch(withCollection(url), options);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// The API gives image paths from the server root; relative ones also work behind a path prefix.
const imageUrl = (hit) => withCollection(hit.image_url.replace(/^\//, ""));

function displayName(hit) {
  const m = hit.metadata || {};
  return m.name || m.caption || m.title || hit.source.split("/").pop();
}

function current() {
  return state.collections.find((c) => c.name === state.collection) || null;
}

// ---- filters -------------------------------------------------------------------------------------------

function chosenFilter() {
  const filter = {};
  for (const select of document.querySelectorAll("#filters select")) {
    if (select.value !== "") filter[select.dataset.key] = JSON.parse(select.value);
  }
  return Object.keys(filter).length ? filter : null;
}

async function loadFilters() {
  const box = $("filters");
  box.replaceChildren();
  let data;
  try {
    data = await call(`v1/collections/${encodeURIComponent(state.collection)}/facets`);
  } catch (error) { return; }  // the page works without filters
  for (const facet of data.facets) {
    const label = el("label", "inline", facet.key);
    const select = el("select");
    select.dataset.key = facet.key;
    select.append(new Option(`any ${facet.key}`, ""));
    for (const { value, count } of facet.values) select.append(new Option(`${value} (${count})`, JSON.stringify(value)));
    select.addEventListener("change", () => { if (state.query) runSearch(false); });
    label.append(select);
    box.append(label);
  }
}

// ---- results, paging, details ----------------------------------------------------------------------------

function card(hit) {
  const li = el("li", "card");
  const open = el("button", "pick");
  open.type = "button";
  open.title = "details";
  const img = el("img");
  img.src = imageUrl(hit);
  img.alt = displayName(hit);
  img.loading = "lazy";
  open.append(img, el("span", "name", displayName(hit)));
  open.addEventListener("click", () => showDetails(hit));
  const m = hit.metadata || {};
  const like = el("button", "like quiet", "more like this");
  like.type = "button";
  like.addEventListener("click", () => searchSimilar(hit));
  li.append(open, el("div", "meta", [m.vendor, m.category].filter(Boolean).join(" · ")),
    el("div", "score", `score ${hit.score.toFixed(3)}`), like);
  return li;
}

function showResults(data, append) {
  $("labels-out").replaceChildren();
  const grid = $("results");
  if (!append) grid.replaceChildren();
  for (const hit of data.results) grid.append(card(hit));
  state.offset += data.results.length;
  const k = Number($("k").value);
  $("more").hidden = data.results.length < k;
  const shown = grid.children.length;
  const filter = chosenFilter();
  const where = filter ? ` where ${Object.entries(filter).map(([key, v]) => `${key} = ${v}`).join(", ")}` : "";
  say(shown ? `${shown} results for ${state.query.label}${where} in ${data.took_ms.toFixed(0)} ms ` +
              `(index ${data.index_version})`
            : `no results for ${state.query.label}${where}`);
}

async function runSearch(append) {
  const q = state.query;
  if (!append) state.offset = 0;
  const k = Number($("k").value);
  const filter = chosenFilter();
  say("searching…");
  try {
    let data;
    if (q.kind === "image") {
      const form = new FormData();
      form.append("file", q.file, q.file.name || "query");
      form.append("k", String(k));
      form.append("offset", String(state.offset));
      if (filter) form.append("filter", JSON.stringify(filter));
      data = await call("v1/search/image", { method: "POST", body: form });
    } else {
      const body = q.kind === "text" ? { query: q.text } : { id: q.id };
      data = await call(`v1/search/${q.kind}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ...body, k, offset: state.offset, filter }),
      });
    }
    showResults(data, append);
  } catch (error) {
    if (!append) { $("results").replaceChildren(); $("more").hidden = true; }
    say(error.message, true);
  }
}

function searchText(event) {
  event.preventDefault();
  const text = $("query").value;
  state.query = { kind: "text", text, label: `“${text.trim()}”` };
  runSearch(false);
}

function searchSimilar(hit) {
  closeDetails();
  state.query = { kind: "similar", id: hit.id, label: `items like “${displayName(hit)}”` };
  runSearch(false);
}

async function showDetails(hit) {
  state.item = hit;
  const box = $("details");
  $("details-title").textContent = displayName(hit);
  $("details-image").src = imageUrl(hit);
  $("details-image").alt = displayName(hit);
  $("details-link").href = imageUrl(hit);
  const dl = $("details-meta");
  const rows = (pairs) => {
    dl.replaceChildren();
    for (const [key, value] of pairs) dl.append(el("dt", "", key), el("dd", "", value));
  };
  const base = [["id", hit.id], ["score", hit.score.toFixed(3)], ["source", hit.source],
    ...Object.entries(hit.metadata || {}).map(([key, v]) => [key, typeof v === "object" ? JSON.stringify(v) : v])];
  rows(base);
  box.hidden = false;
  box.focus();
  try {
    const item = await call(`v1/items/${hit.id}`);
    if (state.item === hit) rows([...base, ["added", item.created_at], ["changed", item.updated_at],
      ["sha256", item.content_hash]]);
  } catch (error) { /* the search hit already told what matters */ }
}

function closeDetails() {
  $("details").hidden = true;
  state.item = null;
}

// ---- image search and classification ------------------------------------------------------------------

function choose(file) {
  if (!file) return;
  state.chosenFile = file;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-text").textContent = `${file.name || "pasted image"} — drop, paste or press Enter to change`;
  state.query = { kind: "image", file, label: file.name ? `“${file.name}”` : "the image" };
  runSearch(false);
}

async function classify(event) {
  event.preventDefault();
  if (!state.chosenFile) { say("choose an image first (drop, paste or click the box above)", true); return; }
  const labels = $("labels").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (!labels.length) { say("give some labels, separated by commas", true); return; }
  const form = new FormData();
  form.append("file", state.chosenFile, state.chosenFile.name || "image");
  for (const label of labels) form.append("labels", label);
  say("classifying…");
  try {
    const data = await call("v1/classify", { method: "POST", body: form });
    const list = $("labels-out");
    list.replaceChildren();
    for (const { label, probability } of data.labels) {
      const row = el("li");
      const bar = el("div", "bar");
      bar.style.width = `${(probability * 100).toFixed(1)}%`;
      const track = el("div", "track");
      track.append(bar);
      row.append(el("span", "label", label), track, el("span", "p", `${(probability * 100).toFixed(1)}%`));
      list.append(row);
    }
    say(`classified into ${data.labels.length} labels in ${data.took_ms.toFixed(0)} ms`);
  } catch (error) { say(error.message, true); }
}

function wireDropZone() {
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); }
  });
  $("file").addEventListener("change", (e) => { choose(e.target.files[0]); e.target.value = ""; });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => choose(e.dataTransfer.files[0]));
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
    if (item) { e.preventDefault(); choose(item.getAsFile()); }
  });
}

// ---- the encoder panel -----------------------------------------------------------------------------------

function fmt(value) {
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(3);
  return value === null || value === undefined ? "—" : String(value);
}

async function loadAbout() {
  const box = $("about");
  box.replaceChildren(el("h2", "", "About this encoder"));
  let info;
  try {
    info = await call(`v1/collections/${encodeURIComponent(state.collection)}/encoder`);
  } catch (error) { box.append(el("p", "error", error.message)); return; }
  const facts = el("dl");
  const add = (key, value) => { if (value !== null && value !== undefined) facts.append(el("dt", "", key), el("dd", "", fmt(value))); };
  const t = info.training || {};
  add("kind", info.kind);
  add("model", t.model);
  add("trained by", t.method);
  add("on", t.data);
  add("examples", t.examples);
  add("steps", t.steps && t.batch_size ? `${t.steps} of batch ${t.batch_size}` : t.steps);
  add("learning rate", t.lr);
  add("processes", t.world_size);
  add("training time", t.train_seconds !== null && t.train_seconds !== undefined ? `${t.train_seconds} s` : null);
  add("final loss", t.final_loss);
  add("finished", t.finished);
  add("pretrained weights", t.pretrained);
  const p = info.preprocess || {};
  add("input", p.size ? `${Array.isArray(p.size) ? p.size.join("×") : `${p.size}×${p.size}`} px, ${p.resize_mode}, ${p.interpolation}` : null);
  add("embedding", `${info.dim} dimensions${info.can_encode_text ? ", images and text" : ", images only"}`);
  add("fingerprint", info.fingerprint);
  box.append(facts);
  if (!info.training) box.append(el("p", "muted", "This encoder file carries no run summary."));
  for (const table of info.quality) {
    const node = el("table", "quality");
    node.append(el("caption", "", table.title));
    const head = el("tr");
    for (const c of table.columns) head.append(el("th", "", c));
    node.append(head);
    for (const row of table.rows) {
      const tr = el("tr");
      for (const cell of row) tr.append(el("td", "", typeof cell === "number" ? cell.toFixed(3) : fmt(cell)));
      node.append(tr);
    }
    box.append(node);
  }
}

function toggleAbout(show) {
  const box = $("about");
  box.hidden = !(show ?? box.hidden);
  $("about-toggle").setAttribute("aria-expanded", String(!box.hidden));
}

// ---- collections and start-up ----------------------------------------------------------------------------

async function useCollection(name) {
  state.collection = name;
  state.query = null;
  state.offset = 0;
  $("results").replaceChildren();
  $("labels-out").replaceChildren();
  $("more").hidden = true;
  closeDetails();
  const c = current();
  $("status").textContent = `${c.count} images in “${c.name}”, index ${c.index_version}, ` +
    `${c.encoder_kind} encoder ${c.encoder_fingerprint.slice(0, 12)}`;
  const textOff = !c.can_encode_text;
  for (const id of ["query", "labels"]) $(id).disabled = textOff;
  for (const b of document.querySelectorAll("form button")) b.disabled = textOff;
  if (textOff) $("status").textContent += " — image search only (this encoder has no text tower)";
  say("");
  await Promise.all([loadFilters(), loadAbout()]);
}

async function start() {
  $("text-form").addEventListener("submit", searchText);
  $("classify-form").addEventListener("submit", classify);
  $("more").addEventListener("click", () => runSearch(true));
  $("k").addEventListener("change", () => { if (state.query) runSearch(false); });
  $("about-toggle").addEventListener("click", () => toggleAbout());
  $("details-close").addEventListener("click", closeDetails);
  $("details-like").addEventListener("click", () => state.item && searchSimilar(state.item));
  $("collection").addEventListener("change", (e) => useCollection(e.target.value));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { closeDetails(); toggleAbout(false); }
    const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
    if (e.key === "/" && !typing) { e.preventDefault(); $("query").focus(); }
  });
  wireDropZone();
  try {
    state.collections = await call("v1/collections");
  } catch (error) { $("status").textContent = `service unavailable: ${error.message}`; return; }
  const picker = $("collection");
  for (const c of state.collections) picker.append(new Option(`${c.name} (${c.count})`, c.name));
  $("collection-picker").hidden = state.collections.length < 2;
  await useCollection(state.collections[0].name);
}

start();
