// The swap timeline as an inline SVG, from one `GET /api/timeline` answer:
//
//   {now, since, models, states: [{model, state, from, to|null}],
//    swaps: [{id, model, evict: [...], reason, started, evicted, finished, error}],
//    requests: [{id, model, arrived, granted, ended, status, swap_id, queue_ms, load_ms}]}
//
// (times in Unix seconds). One lane per model; bars for starting/ready/
// stopping; each request a thin line from arrival to service, a tick where it
// was granted the model, then a thicker line while it was served; each swap a connector from the evicted model's lane to the
// loaded model's lane at the swap's start, labelled with its reason. Swaps are
// focusable and described in words, so the picture can be read by keyboard.
// Pure drawing: no fetching, no timers — `drawTimeline` returns a new <svg>.

const NS = "http://www.w3.org/2000/svg";
const LABEL_W = 150;
const AXIS_H = 26;
const LANE_H = 46;
const BAR_Y = 7; // state bar's offset within a lane
const BAR_H = 16;
const REQ_Y = 33; // request line's offset within a lane
const RIGHT_PAD = 14;
const MAX_REQUESTS = 3000; // marks drawn; the newest win

/** Build an SVG element: s("rect", {x: 1}, child…). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 10 ? `${value.toFixed(1)} s` : `${Math.round(value)} s`;
}

function ms(value) {
  if (value === null || value === undefined) return "–";
  return value < 1000 ? `${Math.round(value)} ms` : seconds(value / 1000);
}

function clock(t, withSeconds) {
  const d = new Date(t * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}${withSeconds ? `:${pad(d.getSeconds())}` : ""}`;
}

/** Axis step (seconds) for a window: about 5–6 labels. */
function tickStep(window) {
  for (const step of [10, 15, 30, 60, 120, 180, 300, 600, 900]) if (window / step <= 6) return step;
  return 1200;
}

export function statusClass(status) {
  if (status >= 500 || status === 499) return "req-error";
  if (status >= 400) return "req-client";
  return "req-ok";
}

/** "swap 3: loaded b, evicted a (group), 1.2 s" — a swap in words. */
export function describeSwap(swap, now) {
  const parts = [`swap ${swap.id}: loaded ${swap.model}`];
  if (swap.evict.length) parts.push(`evicted ${swap.evict.join(", ")} (${swap.reason})`);
  if (swap.error === "cancelled") parts.push("cancelled");
  else if (swap.error) parts.push(`failed: ${swap.error}`);
  if (swap.finished === null || swap.finished === undefined) parts.push(`running for ${seconds(now - swap.started)}`);
  else parts.push(seconds(swap.finished - swap.started));
  return parts.join(", ");
}

export function describeRequest(request) {
  const wait = request.granted === null || request.granted === undefined ? null : request.granted - request.arrived;
  const parts = [`request ${request.id} to ${request.model}: status ${request.status}`];
  parts.push(`waited ${wait === null ? "–" : seconds(wait)}`);
  if (request.queue_ms) parts.push(`queue ${ms(request.queue_ms)}`);
  if (request.load_ms !== null && request.load_ms !== undefined) parts.push(`load ${ms(request.load_ms)}`);
  if (request.swap_id !== null && request.swap_id !== undefined) parts.push(`for swap ${request.swap_id}`);
  parts.push(`took ${seconds(request.ended - request.arrived)}`);
  return parts.join(", ");
}

/**
 * The lanes worth drawing: models with anything in the window, plus any not
 * stopped now, in the server's (sorted) order.
 */
export function activeModels(data, start) {
  const busy = new Set();
  for (const st of data.states) if (st.to === null || st.to >= start) busy.add(st.model);
  for (const sw of data.swaps) {
    if (sw.finished === null || sw.finished >= start) {
      busy.add(sw.model);
      for (const m of sw.evict) busy.add(m);
    }
  }
  for (const r of data.requests) if (r.ended >= start) busy.add(r.model);
  const known = data.models.filter((m) => busy.has(m));
  for (const m of busy) if (!known.includes(m)) known.push(m);
  return known;
}

/** Draw `data` over the last `window` seconds before `data.now`, `width` px wide. */
export function drawTimeline(data, { window, width }) {
  const now = data.now;
  const start = now - window;
  const models = activeModels(data, start);
  const lane = new Map(models.map((m, i) => [m, i]));
  const plotW = Math.max(200, width - LABEL_W - RIGHT_PAD);
  const height = AXIS_H + models.length * LANE_H + 4;
  const x = (t) => LABEL_W + (Math.min(Math.max(t, start), now) - start) / window * plotW;
  const laneTop = (m) => AXIS_H + lane.get(m) * LANE_H;

  const svg = s("svg", {
    class: "timeline",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "group",
    "aria-label": `Timeline of ${models.length} models over the last ${window < 120 ? `${window} seconds` : `${Math.round(window / 60)} minutes`}`,
  });

  // Axis: clock labels and faint grid lines.
  const step = tickStep(window);
  const axis = s("g", { class: "axis", "aria-hidden": "true" });
  for (let t = Math.ceil(start / step) * step; t <= now; t += step) {
    axis.append(s("line", { class: "grid", x1: x(t), x2: x(t), y1: AXIS_H - 4, y2: height }));
    if (x(now) - x(t) > 50) {
      // (too close to "now" to be read beside it)
      axis.append(s("text", { x: x(t), y: AXIS_H - 9, "text-anchor": "middle" }, clock(t, step < 60)));
    }
  }
  axis.append(
    s("line", { class: "now", x1: x(now), x2: x(now), y1: AXIS_H - 4, y2: height }),
    s("text", { x: x(now), y: AXIS_H - 9, "text-anchor": "end", class: "now-label" }, "now"),
  );
  svg.append(axis);

  // Lanes: background and model name.
  for (const m of models) {
    const y = laneTop(m);
    svg.append(
      s(
        "g",
        { class: "lane", "data-model": m },
        s("rect", { class: `lane-bg lane-${lane.get(m) % 2}`, x: 0, y, width, height: LANE_H }),
        s("text", { class: "lane-label", x: 8, y: y + BAR_Y + BAR_H - 3 }, m.length > 20 ? `${m.slice(0, 19)}…` : m, s("title", {}, m)),
      ),
    );
  }

  // State bars.
  const bars = s("g", { class: "states" });
  for (const st of data.states) {
    if (!lane.has(st.model)) continue;
    const to = st.to === null ? now : st.to;
    if (to < start) continue;
    const x1 = x(st.from);
    const w = Math.max(1.5, x(to) - x1);
    const y = laneTop(st.model) + BAR_Y;
    const open = st.to === null ? " (now)" : "";
    bars.append(
      s(
        "rect",
        { class: `bar bar-${st.state}`, x: x1, y, width: w, height: BAR_H, rx: 2, "data-state": st.state },
        s("title", {}, `${st.model} ${st.state} ${clock(st.from, true)}–${st.to === null ? "now" : clock(st.to, true)}, ${seconds(to - st.from)}${open}`),
      ),
    );
  }
  svg.append(bars);

  // Requests: a dashed line from arrival to service, a tick at the grant, a
  // thick line while served. The visible strokes are a few long paths (one
  // per kind and status class: thousands of marks stay cheap to lay out);
  // each request also gets one transparent line carrying its tooltip.
  const requests = data.requests.filter((r) => lane.has(r.model) && r.ended >= start);
  const shown = requests.slice(-MAX_REQUESTS);
  const strokes = new Map(); // "req-ok" → {wait: [], serve: [], tick: []}
  const hits = s("g", { class: "req-hits" });
  for (const r of shown) {
    const y = laneTop(r.model) + REQ_Y;
    const served = r.granted === null || r.granted === undefined ? r.ended : r.granted;
    const x1 = x(r.arrived);
    const x2 = Math.max(x(served), x1 + 1);
    const x3 = Math.max(x(r.ended), x2 + 1);
    const cls = statusClass(r.status);
    if (!strokes.has(cls)) strokes.set(cls, { wait: [], serve: [], tick: [] });
    const d = strokes.get(cls);
    d.wait.push(`M${x1.toFixed(1)} ${y}H${x2.toFixed(1)}`);
    d.serve.push(`M${x2.toFixed(1)} ${y}H${x3.toFixed(1)}`);
    d.tick.push(`M${x2.toFixed(1)} ${y - 5}V${y + 5}`);
    const hit = document.createElementNS(NS, "line");
    hit.setAttribute("class", `req ${cls}`);
    hit.setAttribute("data-request", r.id);
    hit.setAttribute("x1", x1.toFixed(1));
    hit.setAttribute("x2", x3.toFixed(1));
    hit.setAttribute("y1", y);
    hit.setAttribute("y2", y);
    const title = document.createElementNS(NS, "title");
    title.textContent = describeRequest(r);
    hit.append(title);
    hits.append(hit);
  }
  const marks = s("g", { class: "requests", "aria-hidden": "true" });
  for (const [cls, d] of strokes) {
    marks.append(
      s("path", { class: `req-wait ${cls}`, d: d.wait.join("") }),
      s("path", { class: `req-serve ${cls}`, d: d.serve.join("") }),
      s("path", { class: `req-tick ${cls}`, d: d.tick.join("") }),
    );
  }
  svg.append(marks, hits);

  // Swaps: a connector per evicted model, evicted lane → loaded lane, at the start.
  const swaps = s("g", { class: "swaps" });
  const labels = []; // placed label boxes: a label that would overlap one is left out
  const placeLabel = (lx, ly, text) => {
    const w = text.length * 6.5 + 4;
    const left = lx + 5 + w > width - 2; // near the right edge: write it leftwards
    const x1 = left ? lx - 5 - w : lx + 5;
    if (labels.some((b) => x1 < b.x2 && b.x1 < x1 + w && Math.abs(b.y - ly) < 12)) return null;
    labels.push({ x1, x2: x1 + w, y: ly });
    return s("text", { class: "swap-label", x: left ? lx - 5 : lx + 5, y: ly + 4, "text-anchor": left ? "end" : "start" }, text);
  };
  for (const sw of data.swaps) {
    if (!lane.has(sw.model)) continue;
    if (sw.finished !== null && sw.finished < start) continue;
    const sx = x(sw.started);
    const to = laneTop(sw.model) + BAR_Y + BAR_H / 2;
    const label = describeSwap(sw, now);
    const group = s("g", {
      class: `swap${sw.error ? " swap-failed" : ""}`,
      tabindex: "0",
      role: "img",
      "aria-label": label,
      "data-swap": sw.id,
      "data-reason": sw.reason,
      "data-model": sw.model,
      "data-evict": sw.evict.join(" "),
    });
    group.append(s("title", {}, label));
    const evicted = sw.evict.filter((m) => lane.has(m));
    for (const m of evicted) {
      const from = laneTop(m) + BAR_Y + BAR_H / 2;
      const dir = to > from ? 1 : -1;
      group.append(
        s("line", { class: "swap-hit", x1: sx, x2: sx, y1: from, y2: to }),
        s("line", { class: "swap-line", x1: sx, x2: sx, y1: from, y2: to - dir * 6 }),
        s("circle", { class: "swap-from", cx: sx, cy: from, r: 3.5 }),
        s("path", { class: "swap-head", d: `M ${sx - 5} ${to - dir * 8} L ${sx + 5} ${to - dir * 8} L ${sx} ${to} Z` }),
        placeLabel(sx, (from + to) / 2, sw.reason),
      );
    }
    if (!evicted.length) {
      // Nothing evicted (or off-screen): a diamond on the loaded lane.
      group.append(s("path", { class: "swap-head swap-solo", d: `M ${sx} ${to - 7} L ${sx + 6} ${to} L ${sx} ${to + 7} L ${sx - 6} ${to} Z` }));
    }
    swaps.append(group);
  }
  svg.append(swaps);
  return { svg, models, requests: requests.length, shownRequests: shown.length };
}
