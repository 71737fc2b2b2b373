// Activity: what modelswap served, and why it took as long as it did.
//
// Totals (/api/metrics/stats), the requests in flight (live, cancellable),
// and one page of the request table (/api/metrics/activity: server-side
// paging, sorting and model filter — never the whole store, so the page is
// fast with any number of rows). On `activity` events the first page and the
// totals refresh, at most once a second.

import { h, replace } from "../js/dom.js";

// The page's parts are imported when it mounts, while its first data is
// already being fetched: one round trip fewer before the table shows.
const PARTS = () =>
  Promise.all([
    import("../js/activity-table.js"),
    import("../js/capture-dialog.js"),
    import("../js/inflight-panel.js"),
    import("../js/explain.js"),
  ]);

const PAGE_SIZES = [25, 50, 100];
const PREFS = "modelswap.activity";
const THROTTLE_MS = 1000;

function loadPrefs() {
  try {
    const saved = JSON.parse(localStorage.getItem(PREFS) || "{}");
    return {
      limit: PAGE_SIZES.includes(saved.limit) ? saved.limit : 25,
      sort: typeof saved.sort === "string" ? saved.sort : "id",
      order: saved.order === "asc" ? "asc" : "desc",
    };
  } catch {
    return { limit: 25, sort: "id", order: "desc" };
  }
}

/** An AbortController that also aborts when the page goes; `done()` unhooks it. */
function fetchers(pageSignal) {
  const controller = new AbortController();
  const onLeave = () => controller.abort();
  pageSignal.addEventListener("abort", onLeave, { once: true });
  controller.done = () => pageSignal.removeEventListener("abort", onLeave);
  return controller;
}

function statsPath({ model }) {
  return model ? `/api/metrics/stats?model=${encodeURIComponent(model)}` : "/api/metrics/stats";
}

/** The activity API query for a view state. */
export function activityQuery({ page, limit, sort, order, model }) {
  const query = new URLSearchParams({ page, limit, sort, order });
  if (model) query.append("model", model);
  return `/api/metrics/activity?${query}`;
}

const fixed = (n) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));

function histogramView(title, histogram, rate) {
  if (!histogram) return h("div", { class: "stat hist" }, h("div", { class: "stat-label" }, title), h("div", { class: "muted" }, "no data"));
  const peak = Math.max(...histogram.bins, 1);
  return h(
    "div",
    { class: "stat hist" },
    h("div", { class: "stat-label" }, title),
    h(
      "div",
      { class: "bars", "aria-hidden": "true" },
      histogram.bins.map((n) => h("span", { style: `height:${Math.max(4, (n / peak) * 100)}%` })),
    ),
    h("div", { class: "muted small-text" }, `p50 ${fixed(histogram.p50)} · p95 ${fixed(histogram.p95)} · p99 ${rate(histogram.p99)}`),
  );
}

function statsView(stats, rate) {
  const total = (label, value, key) =>
    h("div", { class: "stat", "data-stat": key }, h("div", { class: "stat-label" }, label), h("div", { class: "stat-value" }, (value ?? 0).toLocaleString()));
  return [
    total("Requests", stats.total_requests, "requests"),
    total("Prompt tokens", stats.total_input_tokens, "input"),
    total("Generated tokens", stats.total_output_tokens, "output"),
    total("Cached tokens", stats.total_cache_tokens, "cache"),
    histogramView("Prefill speed", stats.prompt_histogram, rate),
    histogramView("Decode speed", stats.gen_histogram, rate),
  ];
}

export default {
  title: "Activity",
  async mount(root, ctx) {
    const { api, events, signal } = ctx;
    const view = { page: 1, model: "", ...loadPrefs() };
    let totalPages = 1;
    let lastLoad = -Infinity;
    let timer = null;
    let fetching = null;
    let missed = false;
    let stale = false;

    const fetchStats = (signalOf) => api.getJSON(statsPath(view), { signal: signalOf });
    const fetchRows = (signalOf) => api.getJSON(activityQuery(view), { signal: signalOf });
    const firstFetch = fetchers(signal);
    const prefetched = { stats: fetchStats(firstFetch.signal), rows: fetchRows(firstFetch.signal) };
    for (const promise of Object.values(prefetched)) promise.catch(() => {}); // awaited below
    const parts = PARTS();
    let table = null; // the parts, once imported
    let rate = null;

    const stats = h("div", { class: "stats", "data-testid": "stats" });
    const statsError = h("p", { class: "error", role: "alert", hidden: true });
    const inflightSlot = h("div", {});
    const tableSlot = h("div", { class: "table-scroll" }, h("p", { class: "muted" }, "Loading…"));
    const tableError = h("p", { class: "error", role: "alert", hidden: true });

    const modelFilter = h("select", { id: "activity-model" });
    const pageSize = h(
      "select",
      { id: "activity-limit" },
      PAGE_SIZES.map((n) => h("option", { value: n, selected: n === view.limit }, String(n))),
    );
    const position = h("span", { class: "pager-position", "data-testid": "pager-position", "aria-live": "polite" });
    const nav = (label, target) => h("button", { type: "button", "data-nav": label.toLowerCase(), onclick: () => go(target()) }, label);
    const first = nav("First", () => 1);
    const prev = nav("Prev", () => view.page - 1);
    const next = nav("Next", () => view.page + 1);
    const last = nav("Last", () => totalPages);

    function save() {
      localStorage.setItem(PREFS, JSON.stringify({ limit: view.limit, sort: view.sort, order: view.order }));
    }

    function go(page) {
      const target = Math.min(Math.max(1, page), Math.max(1, totalPages));
      if (target === view.page) return;
      view.page = target;
      load();
    }

    let shownModels = null;
    function fillModels() {
      const ids = events.state.models.map((m) => m.id);
      if (view.model && !ids.includes(view.model)) ids.push(view.model);
      const key = ids.join("\n");
      if (key === shownModels) return; // unchanged: don't disturb an open <select>
      shownModels = key;
      replace(
        modelFilter,
        h("option", { value: "" }, "All models"),
        ids.map((id) => h("option", { value: id, selected: id === view.model }, id)),
      );
    }

    modelFilter.addEventListener("change", () => {
      view.model = modelFilter.value;
      view.page = 1;
      load();
    });
    pageSize.addEventListener("change", () => {
      view.limit = Number(pageSize.value);
      view.page = 1;
      save();
      load();
    });

    async function showStats(answer) {
      try {
        replace(stats, statsView(await answer, rate));
        statsError.hidden = true;
      } catch (error) {
        if (error?.name === "AbortError") return;
        statsError.hidden = false;
        statsError.textContent = `Totals unavailable: ${error.message}`;
      }
    }

    async function showRows(pending, signalOf) {
      table.element.setAttribute("aria-busy", "true");
      try {
        const answer = await pending;
        totalPages = Math.max(1, answer.total_pages || 1);
        if (view.page > totalPages && answer.total > 0) {
          view.page = totalPages; // rows went away (e.g. the in-memory store rolled over)
          return showRows(fetchRows(signalOf), signalOf);
        }
        table.render(answer.data || [], view.sort, view.order, view.model ? `No requests for ${view.model}.` : undefined);
        position.textContent = `Page ${view.page} of ${totalPages} · ${answer.total} requests`;
        first.disabled = prev.disabled = view.page <= 1;
        next.disabled = last.disabled = view.page >= totalPages;
        tableError.hidden = true;
      } catch (error) {
        if (error?.name === "AbortError") return;
        tableError.hidden = false;
        tableError.textContent = `Requests unavailable: ${error.message}`;
      } finally {
        table.element.removeAttribute("aria-busy");
      }
    }

    /** Fetch and show the totals and (unless `rows` is false) the current page. */
    function load({ rows = true, first = null } = {}) {
      clearTimeout(timer);
      timer = null;
      lastLoad = performance.now();
      fetching?.abort();
      const controller = first?.controller || fetchers(signal);
      fetching = controller;
      const work = [showStats(first?.stats || fetchStats(controller.signal))];
      if (rows) work.push(showRows(first?.rows || fetchRows(controller.signal), controller.signal));
      return Promise.all(work).finally(controller.done);
    }

    function refreshSoon() {
      if (!table) {
        stale = true; // the first page is still on its way: refresh after it
        return;
      }
      if (timer) return;
      const wait = Math.max(0, THROTTLE_MS - (performance.now() - lastLoad));
      timer = setTimeout(() => load({ rows: view.page === 1 }), wait);
    }

    const unsubscribe = [
      events.on("activity", refreshSoon),
      events.on("modelStatus", fillModels),
      events.on("connection", (state) => {
        // After a reconnect, rows recorded while disconnected came without events.
        if (state === "disconnected") missed = true;
        else if (state === "connected" && missed) refreshSoon();
      }),
    ];
    const ticker = setInterval(() => table?.tick(), 5000);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      clearInterval(ticker);
      for (const off of unsubscribe) off();
    });

    // The page's frame is drawn at once; rows, totals and the panel fill it when they arrive.
    fillModels();
    root.append(
      h("section", { class: "card", "aria-labelledby": "totals-title" }, h("h2", { id: "totals-title" }, "Totals"), statsError, stats),
      inflightSlot,
      h(
        "section",
        { class: "card requests", "aria-labelledby": "requests-title" },
        h(
          "div",
          { class: "row table-controls" },
          h("h2", { id: "requests-title" }, "Requests"),
          h("span", { class: "spacer" }),
          h("label", { for: "activity-model" }, "Model"),
          modelFilter,
          h("label", { for: "activity-limit" }, "Rows"),
          pageSize,
        ),
        tableError,
        tableSlot,
        h("nav", { class: "row pager", "aria-label": "Pages" }, first, prev, position, next, last),
      ),
    );

    const [{ activityTable }, { captureDialog }, { inflightPanel }, explain] = await parts;
    if (signal.aborted) return;
    rate = explain.rate;
    const dialog = captureDialog(api, signal);
    table = activityTable({
      onSort(key) {
        view.order = view.sort === key && view.order === "desc" ? "asc" : "desc";
        view.sort = key;
        view.page = 1;
        save();
        load();
      },
      onCapture: (id, button) => dialog.open(id, button),
    });
    replace(tableSlot, table.element);
    inflightSlot.replaceWith(inflightPanel(ctx));
    root.append(dialog.element);
    load({ first: { controller: firstFetch, ...prefetched } }).then(() => stale && refreshSoon());
    // Everything started here ends with ctx.signal: no cleanup function to return.
  },
};
