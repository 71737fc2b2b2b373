// Timeline: why the GPU thrashed, at a glance. One lane per model over the
// last 1 min / 5 min / 15 min / 1 h (zoom buttons; 15 min by default), from `GET /api/timeline?since=…`: when each model
// was starting, ready and stopping, every request from arrival to service,
// and every swap as a connector from the model it evicted to the model it
// loaded. Refreshed on modelStatus/activity/loadProgress events (at most once
// a second) and every 10 s so "now" moves. Drawing is in js/timeline-draw.js.

import { getJSON } from "../js/api.js";
import { h, replace } from "../js/dom.js";

// The drawing module loads while the first /api/timeline request runs (a
// static import would make the request wait for it).
let drawing = null;
function loadDrawing() {
  drawing ??= import("../js/timeline-draw.js");
  return drawing;
}

function timelineURL(window) {
  const since = new Date(Date.now() - (window + 5) * 1000).toISOString();
  return `/api/timeline?since=${encodeURIComponent(since)}`;
}

const ZOOMS = [
  { label: "1 min", seconds: 60 },
  { label: "5 min", seconds: 300 },
  { label: "15 min", seconds: 900 },
  { label: "1 h", seconds: 3600 },
];
const DEFAULT_ZOOM = 900;
const ZOOM_KEY = "modelswap.timeline.zoom";
const MIN_GAP_MS = 1000; // at most one refresh a second
const EVERY_MS = 10_000;
const RECENT_SWAPS = 8;

function savedZoom() {
  const saved = Number(localStorage.getItem(ZOOM_KEY));
  return ZOOMS.some((z) => z.seconds === saved) ? saved : DEFAULT_ZOOM;
}

// The first request starts as this module is evaluated — the shell mounts the
// page a few tasks later (after its queued event-stream messages), and the
// answer is on its way meanwhile. Used once, by a mount within EARLY_MS.
const EARLY_MS = 2000;
let early = { window: savedZoom(), at: performance.now(), answer: getJSON(timelineURL(savedZoom())) };
early.answer.catch(() => {}); // a page that never mounts must not leave an unhandled rejection
loadDrawing();

function takeEarly(window) {
  const taken = early;
  early = null;
  return taken && taken.window === window && performance.now() - taken.at < EARLY_MS ? taken.answer : null;
}

function windowName(seconds) {
  if (seconds >= 3600) return "the last hour";
  return seconds <= 60 ? "the last minute" : `the last ${Math.round(seconds / 60)} minutes`;
}

class TimelinePage {
  constructor(root, ctx) {
    this.ctx = ctx;
    this.window = savedZoom();
    this.data = null;
    this.fetching = false;
    this.again = false;
    this.lastFetch = -Infinity;
    this.pendingTimer = null;
    this.timer = null;

    this.zoomButtons = ZOOMS.map((zoom) =>
      h(
        "button",
        {
          type: "button",
          "aria-pressed": String(zoom.seconds === this.window),
          "aria-label": `Show ${zoom.label}`,
          onclick: () => this.zoom(zoom.seconds),
        },
        zoom.label,
      ),
    );
    this.summary = h("p", { class: "muted timeline-summary" }); // not live: it changes every second while loading
    this.plot = h("div", { class: "timeline-plot" });
    // A focused swap's description, visible (a <title> tooltip only shows on hover).
    this.detail = h("p", { class: "swap-detail", "aria-hidden": "true" });
    this.plot.addEventListener("focusin", (event) => {
      this.detail.textContent = event.target.closest?.(".swap")?.getAttribute("aria-label") || "";
    });
    this.plot.addEventListener("focusout", () => {
      this.detail.textContent = "";
    });
    this.error = h("p", { class: "error", role: "alert", hidden: true });
    this.swapList = h("ol", { class: "swap-list", reversed: true });
    this.swapCard = h("div", { class: "card", hidden: true }, h("h2", {}, "Recent swaps"), this.swapList);
    root.append(
      h(
        "div",
        { class: "card" },
        h(
          "div",
          { class: "row timeline-toolbar" },
          h("div", { class: "row zoom", role: "group", "aria-label": "Zoom" }, this.zoomButtons),
          h("span", { class: "spacer" }),
          this.legend(),
        ),
        this.summary,
        this.error,
        this.plot,
        this.detail,
      ),
      this.swapCard,
    );
  }

  legend() {
    const item = (cls, text) => h("span", { class: "legend-item" }, h("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), text);
    return h(
      "div",
      { class: "legend row", "aria-label": "Legend" },
      item("sw-starting", "starting"),
      item("sw-ready", "ready"),
      item("sw-stopping", "stopping"),
      item("sw-req-wait", "request waiting"),
      item("sw-req-ok", "served"),
      item("sw-req-error", "failed request"),
      item("sw-swap", "swap: evicted → loaded"),
    );
  }

  start() {
    const refresh = () => this.refresh();
    this.unsubscribe = ["modelStatus", "activity", "loadProgress"].map((type) => this.ctx.events.on(type, refresh));
    this.timer = setInterval(refresh, EVERY_MS);
    this.onResize = () => {
      if (Math.floor(this.plot.clientWidth) !== this.drawnWidth) this.render();
    };
    window.addEventListener("resize", this.onResize);
    this.refresh();
  }

  stop() {
    for (const off of this.unsubscribe || []) off();
    clearInterval(this.timer);
    clearTimeout(this.pendingTimer);
    window.removeEventListener("resize", this.onResize);
  }

  zoom(seconds) {
    this.window = seconds;
    localStorage.setItem(ZOOM_KEY, String(seconds));
    ZOOMS.forEach((z, i) => this.zoomButtons[i].setAttribute("aria-pressed", String(z.seconds === seconds)));
    this.render(); // what we have, at once; then the wider window from the server
    this.refresh(true);
  }

  /** Fetch now, or once the last fetch is a second old; never two at once. */
  refresh(force = false) {
    if (this.ctx.signal.aborted) return;
    if (this.fetching) {
      this.again = true;
      return;
    }
    const wait = this.lastFetch + MIN_GAP_MS - performance.now();
    if (wait > 0 && !force) {
      if (!this.pendingTimer) {
        this.pendingTimer = setTimeout(() => {
          this.pendingTimer = null;
          this.refresh();
        }, wait);
      }
      return;
    }
    this.fetch();
  }

  async fetch() {
    this.fetching = true;
    this.lastFetch = performance.now();
    const window = this.window;
    try {
      const answer = takeEarly(window) || this.ctx.api.getJSON(timelineURL(window), { signal: this.ctx.signal });
      const [data, draw] = await Promise.all([answer, loadDrawing()]);
      if (this.ctx.signal.aborted) return;
      this.data = data;
      this.draw = draw;
      this.error.hidden = true;
      this.render();
    } catch (error) {
      if (error.name === "AbortError") return;
      this.error.textContent = `Could not read /api/timeline: ${error.message}`;
      this.error.hidden = false;
    } finally {
      this.fetching = false;
      if (this.again && !this.ctx.signal.aborted) {
        this.again = false;
        this.refresh();
      }
    }
  }

  render() {
    const data = this.data;
    if (!data || !this.draw) return;
    const { describeSwap, drawTimeline } = this.draw;
    this.drawnWidth = Math.floor(this.plot.clientWidth);
    const width = Math.max(480, this.drawnWidth || 900);
    // Keep the focused swap focused across a redraw.
    const focused = document.activeElement?.closest?.(".swap")?.dataset.swap;
    const drawn = drawTimeline(data, { window: this.window, width });
    if (!drawn.models.length) {
      const wider = this.window < 3600
        ? h("button", { type: "button", onclick: () => { this.zoom(3600); this.zoomButtons.at(-1).focus(); } }, "Show the last hour")
        : null;
      replace(this.plot, h("div", { class: "row timeline-empty" }, h("p", { class: "muted" }, `No activity in ${windowName(this.window)}.`), wider));
      this.summary.textContent = "";
      this.swapCard.hidden = true;
      return;
    }
    replace(this.plot, drawn.svg);
    if (focused) drawn.svg.querySelector(`.swap[data-swap="${CSS.escape(focused)}"]`)?.focus();
    const start = data.now - this.window;
    const swaps = data.swaps.filter((sw) => sw.finished === null || sw.finished >= start);
    const evicting = swaps.filter((sw) => sw.evict.length);
    const waited = data.requests.filter((r) => r.ended >= start && r.load_ms !== null && r.load_ms !== undefined);
    const loadSeconds = swaps.reduce((sum, sw) => sum + ((sw.finished ?? data.now) - sw.started), 0);
    const parts = [
      `${drawn.requests} requests`,
      `${swaps.length} swaps (${evicting.length} evicting)`,
      `${waited.length} requests waited for a load`,
      `${loadSeconds.toFixed(1)} s spent swapping in ${windowName(this.window)}`,
    ];
    if (drawn.shownRequests < drawn.requests) parts.push(`newest ${drawn.shownRequests} requests drawn`);
    this.summary.textContent = parts.join(" · ");
    const recent = swaps.slice(-RECENT_SWAPS).reverse();
    this.swapCard.hidden = recent.length === 0;
    replace(this.swapList, recent.map((sw) => h("li", { value: sw.id }, `${new Date(sw.started * 1000).toLocaleTimeString()} — ${describeSwap(sw, data.now)}`)));
  }
}

export default {
  title: "Timeline",
  mount(root, ctx) {
    const page = new TimelinePage(root, ctx);
    page.start();
    return () => page.stop();
  },
};
