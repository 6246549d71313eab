// The lookalike search page: plain DOM, no build step. Talks to the JSON API under /v1.
"use strict";

const $ = (id) => document.getElementById(id);
let chosenFile = null;

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").classList.toggle("error", isError);
}

async function call(url, options) {
  const response = await fetch(url, options);
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
  if (text !== undefined) node.textContent = text;
  return node;
}

function displayName(hit) {
  const m = hit.metadata || {};
  return m.name || m.caption || m.path || hit.source.split("/").pop();
}

function showResults(data, what) {
  $("labels-out").replaceChildren();
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of data.results) {
    const card = el("li", "card");
    const img = el("img");
    img.src = hit.image_url;
    img.alt = displayName(hit);
    img.loading = "lazy";
    img.title = "find images like this one";
    img.addEventListener("click", () => searchLike(hit));
    const m = hit.metadata || {};
    card.append(img, el("div", "name", displayName(hit)),
      el("div", "meta", [m.vendor, m.category].filter(Boolean).join(" · ")),
      el("div", "score", `score ${hit.score.toFixed(3)}`));
    grid.append(card);
  }
  say(`${data.results.length} results for ${what} in ${data.took_ms.toFixed(0)} ms (index ${data.index_version})`);
}

async function searchText(event) {
  event.preventDefault();
  const query = $("query").value;
  say("searching…");
  try {
    const data = await call("v1/search/text", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query, k: Number($("k").value) }),
    });
    showResults(data, `“${query.trim()}”`);
  } catch (error) { say(error.message, true); }
}

function choose(file) {
  if (!file) return;
  chosenFile = file;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-text").textContent = `${file.name || "image"} — drop or click to change`;
  searchImage();
}

async function searchImage() {
  if (!chosenFile) return;
  const form = new FormData();
  form.append("file", chosenFile, chosenFile.name || "query");
  form.append("k", $("k").value);
  say("searching…");
  try {
    showResults(await call("v1/search/image", { method: "POST", body: form }), "the image");
  } catch (error) { say(error.message, true); }
}

async function searchLike(hit) {
  try {
    const blob = await (await fetch(hit.image_url)).blob();
    choose(new File([blob], displayName(hit), { type: blob.type }));
  } catch (error) { say(error.message, true); }
}

async function classify(event) {
  event.preventDefault();
  if (!chosenFile) { say("choose an image first", true); return; }
  const form = new FormData();
  form.append("file", chosenFile, chosenFile.name || "image");
  form.append("labels", $("labels").value);
  say("classifying…");
  try {
    const data = await call("v1/classify", { method: "POST", body: form });
    const list = $("labels-out");
    list.replaceChildren();
    for (const { label, probability } of data.labels) {
      const row = el("li");
      const bar = el("div", "bar");
      bar.style.width = `${(probability * 100).toFixed(1)}%`;
      const track = el("div");
      track.append(bar);
      row.append(el("span", "", label), track, el("span", "p", `${(probability * 100).toFixed(1)}%`));
      list.append(row);
    }
    say(`classified in ${data.took_ms.toFixed(0)} ms`);
  } catch (error) { say(error.message, true); }
}

function wireDropZone() {
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
  $("file").addEventListener("change", (e) => choose(e.target.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => choose(e.dataTransfer.files[0]));
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
    if (item) choose(item.getAsFile());
  });
}

async function start() {
  $("text-form").addEventListener("submit", searchText);
  $("classify-form").addEventListener("submit", classify);
  wireDropZone();
  try {
    const h = await call("healthz");
    $("status").textContent = `${h.count} images in “${h.collection}”, index ${h.index_version}, ` +
      `encoder ${h.encoder_fingerprint.slice(0, 12)}`;
    if (!h.can_encode_text) {
      for (const id of ["query", "labels"]) $(id).disabled = true;
      for (const b of document.querySelectorAll("form button")) b.disabled = true;
      $("status").textContent += " — image search only (this encoder has no text tower)";
    }
  } catch (error) { $("status").textContent = `service unavailable: ${error.message}`; }
}

start();
