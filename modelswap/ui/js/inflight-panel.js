// The requests being served right now, live from the shared event stream
// (`events.state.inflight`, kept by `inflight` events), each with a Cancel
// button (POST /api/inflight/<id>/cancel). Elapsed time ticks locally from the
// server's elapsed_ms at the moment the entry arrived.

import { h, replace, bytes, duration } from "./dom.js";

/** The first non-empty session header the config names (case-insensitive). */
export function sessionOf(entry, names) {
  const headers = entry.req_headers || {};
  for (const name of names || []) {
    const wanted = name.toLowerCase();
    for (const [key, value] of Object.entries(headers)) {
      if (key.toLowerCase() === wanted && value) return value;
    }
  }
  return "";
}

export function inflightPanel({ api, events, signal }) {
  const body = h("tbody", {});
  const count = h("span", { class: "tag", "data-testid": "inflight-count" }, "0");
  const message = h("p", { class: "error", role: "alert", hidden: true });
  const table = h(
    "table",
    { class: "inflight-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["", "Elapsed", "Model", "Request", "Address", "Session", "Received"].map((c) =>
          h("th", { scope: "col", class: c === "Elapsed" || c === "Received" ? "num" : null }, c),
        ),
      ),
    ),
    body,
  );
  const empty = h("p", { class: "muted" }, "No requests in flight.");
  const element = h(
    "section",
    { class: "card inflight", "aria-labelledby": "inflight-title" },
    h("h2", { id: "inflight-title" }, "In flight ", count),
    message,
    empty,
    table,
  );
  const seen = new Map(); // id → performance.now() when its latest entry arrived
  const elapsedCells = new Map();

  async function cancel(id, button) {
    button.disabled = true;
    message.hidden = true;
    try {
      await api.send(`/api/inflight/${encodeURIComponent(id)}/cancel`, undefined, { signal });
    } catch (error) {
      if (error?.name === "AbortError") return;
      button.disabled = false;
      message.hidden = false;
      message.textContent = `Cancel of request ${id} failed: ${error.message}`;
    }
  }

  function elapsed(entry) {
    return entry.elapsed_ms + (performance.now() - (seen.get(entry.id) ?? performance.now()));
  }

  function draw() {
    const entries = [...events.state.inflight.values()];
    const names = events.state.uiConfig?.activity?.session_id;
    count.textContent = String(entries.length);
    empty.hidden = entries.length > 0;
    table.hidden = entries.length === 0;
    elapsedCells.clear();
    replace(
      body,
      entries.map((entry) => {
        const button = h("button", { type: "button", class: "danger small", "aria-label": `Cancel request ${entry.id}` }, "Cancel");
        button.addEventListener("click", () => cancel(entry.id, button));
        const cell = h("td", { class: "num" }, duration(elapsed(entry)));
        elapsedCells.set(entry.id, [cell, entry]);
        return h(
          "tr",
          { "data-id": entry.id },
          h("td", {}, button),
          cell,
          h("td", {}, entry.model),
          h("td", { class: "mono" }, `${entry.method} ${entry.req_path}`),
          h("td", { class: "mono" }, entry.remote_ip),
          h("td", { class: "mono" }, sessionOf(entry, names) || "–"),
          h("td", { class: "num" }, bytes(entry.resp_bytes)),
        );
      }),
    );
  }

  function tick() {
    for (const [cell, entry] of elapsedCells.values()) cell.textContent = duration(elapsed(entry));
  }

  const offInflight = events.on("inflight", (data) => {
    const stamp = performance.now();
    if (data.operation === "snapshot") {
      seen.clear();
      for (const r of data.requests || []) seen.set(r.id, stamp);
    } else if (data.operation === "upsert") {
      seen.set(data.request.id, stamp);
    } else if (data.operation === "remove") {
      seen.delete(data.id);
    }
    draw();
  });
  const offConfig = events.on("uiConfig", draw);
  for (const id of events.state.inflight.keys()) seen.set(id, performance.now());
  const timer = setInterval(tick, 1000);
  signal.addEventListener("abort", () => {
    clearInterval(timer);
    offInflight();
    offConfig();
  });
  draw();
  return element;
}
