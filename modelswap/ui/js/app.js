// The shell: hash routing to page modules, the shared event stream, the
// connection indicator. A page is `modelswap/ui/pages/<name>.js` exporting
//
//   export default { title: "Models", mount(root, ctx) { …; return cleanup; } }
//
// `mount` renders into `root` (an empty <section>), may be async, and returns
// a function that undoes everything it started (event subscriptions, timers,
// fetches via ctx.signal). ctx = { events, api, signal, params, navigate }.
// `#/models/qwen` mounts page "models" with params ["qwen"].

import * as api from "./api.js";
import { Events } from "./events.js";
import { h, replace } from "./dom.js";

const PAGES = ["models", "playground", "activity", "timeline", "logs", "overview"];
const DEFAULT_PAGE = "models";

const events = new Events();
const main = document.getElementById("main");
const title = document.getElementById("page-title");
let current = null; // { cleanup, controller }
let generation = 0;

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  const name = PAGES.includes(parts[0]) ? parts[0] : DEFAULT_PAGE;
  return { name, params: parts.slice(1).map(decodeURIComponent) };
}

function navigate(path) {
  location.hash = path.startsWith("#") ? path : `#${path}`;
}

async function show() {
  const { name, params } = route();
  const mine = ++generation;
  if (current) {
    current.controller.abort();
    try {
      current.cleanup?.();
    } catch (error) {
      console.error("page cleanup failed", error);
    }
    current = null;
  }
  for (const link of document.querySelectorAll(".nav a")) {
    const active = link.dataset.page === name;
    link.classList.toggle("active", active);
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const root = h("section", { class: `page page-${name}`, "data-page": name });
  replace(main, root);
  const controller = new AbortController();
  current = { cleanup: null, controller };
  try {
    const module = await import(`../pages/${name}.js`);
    if (mine !== generation) return; // navigated away while loading
    const page = module.default;
    title.textContent = page.title || name;
    document.title = `${page.title || name} · modelswap`;
    const ctx = { events, api, signal: controller.signal, params, navigate };
    current.cleanup = (await page.mount(root, ctx)) || null;
    if (mine !== generation) current?.cleanup?.();
  } catch (error) {
    if (error?.name === "AbortError") return;
    console.error(`page ${name} failed`, error);
    replace(root, h("p", { class: "error", role: "alert" }, `This page failed to load: ${error.message}`));
  }
}

function showConnection(state) {
  const dot = document.getElementById("connection");
  dot.className = `dot dot-${state === "connected" ? "ready" : state === "connecting" ? "busy" : "off"}`;
  dot.setAttribute("aria-label", state);
  dot.title = `event stream: ${state}`;
}

async function showVersion() {
  try {
    const info = await api.getJSON("/api/version");
    const commit = (info.commit || "").slice(0, 7);
    document.getElementById("version").textContent = `v${info.version}${commit ? ` · ${commit}` : ""}`;
  } catch {
    /* optional */
  }
}

events.on("connection", (state) => {
  showConnection(state);
  if (state === "connected") showVersion();
});
window.addEventListener("hashchange", show);
events.connect();
show();

// For tests and the curious: the live state, read-only by convention.
window.modelswap = { events };
