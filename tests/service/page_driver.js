// Runs service/static/app.js in Node against a live service, with a minimal stand-in for the DOM,
// and drives it like a person would: text search, image search, classification, a bad query.
// Usage: node page_driver.js BASE_URL APP_JS IMAGE_PNG   -> prints one JSON report on stdout.
"use strict";

const fs = require("fs");
const vm = require("vm");

const [base, appJs, imagePath] = process.argv.slice(2);

class Element {
  constructor(tag) {
    this.tagName = tag;
    this.children = [];
    this.listeners = {};
    this.style = {};
    this.classes = new Set();
    this.textContent = "";
    this.value = "";
    this.hidden = false;
    this.disabled = false;
    const self = this;
    this.classList = {
      add: (c) => self.classes.add(c),
      remove: (c) => self.classes.delete(c),
      toggle: (c, on) => (on ? self.classes.add(c) : self.classes.delete(c)),
    };
  }
  set className(v) { this.classes = new Set(v.split(/\s+/).filter(Boolean)); }
  addEventListener(type, fn) { (this.listeners[type] ||= []).push(fn); }
  dispatch(type, event = {}) {
    for (const fn of this.listeners[type] || []) fn({ preventDefault() {}, ...event });
  }
  append(...nodes) { this.children.push(...nodes); }
  replaceChildren(...nodes) { this.children = nodes; }
  click() { this.dispatch("click"); }
}

const elements = {};
const document = {
  getElementById: (id) => (elements[id] ||= new Element("div")),
  createElement: (tag) => new Element(tag),
  addEventListener() {},
  querySelectorAll: () => [],
};
elements.k = new Element("select");
elements.k.value = "8";

const context = {
  document, console, URL, FormData, Blob, File, JSON, Number,
  fetch: (url, options) => fetch(new URL(url, base + "/"), options),
};
vm.createContext(context);
vm.runInContext(fs.readFileSync(appJs, "utf8"), context);

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(check, what) {
  for (let i = 0; i < 300; i++) {
    if (check()) return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}; message: ${$("message").textContent}`);
}
const cards = () => $("results").children.map((card) => ({
  src: card.children[0].src, name: card.children[1].textContent, score: card.children[3].textContent,
}));

(async () => {
  const report = {};
  await until(() => $("status").textContent && $("status").textContent !== "connecting…", "health");
  report.status = $("status").textContent;

  $("query").value = "dog face";
  $("text-form").dispatch("submit");
  await until(() => /results/.test($("message").textContent), "text results");
  report.text = cards();

  const bytes = fs.readFileSync(imagePath);
  $("file").dispatch("change", { target: { files: [new File([bytes], "query.png", { type: "image/png" })] } });
  await until(() => /for the image/.test($("message").textContent), "image results");
  report.image = cards();

  $("labels").value = "dog, keycap, flag";
  $("classify-form").dispatch("submit");
  await until(() => /classified/.test($("message").textContent), "classification");
  report.labels = $("labels-out").children.map((row) => row.children[0].textContent);

  $("query").value = "   ";
  $("text-form").dispatch("submit");
  await until(() => $("message").classes.has("error"), "an error message");
  report.error = $("message").textContent;

  const src = report.text[0].src;
  report.image_fetch = (await fetch(new URL(src, base))).status;
  console.log(JSON.stringify(report));
})().catch((error) => { console.error(error && error.stack ? error.stack : String(error)); process.exit(1); });
