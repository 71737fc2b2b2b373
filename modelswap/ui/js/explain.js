// Words for an activity row's numbers: the explain breakdown (where the
// request's time went), token rates, statuses. Pure functions of the row.

import { duration } from "./dom.js";

const QUEUE_WORTH_MENTIONING_MS = 10;

/** "waited for b · evicted a (group) · load 1.10 s · ttfb 12 ms", or "" without explain. */
export function explainSummary(explain) {
  if (!explain) return "";
  const parts = [];
  // A few ms of queue is bookkeeping, not waiting; the detail view has the exact figure.
  if (explain.queue_ms >= QUEUE_WORTH_MENTIONING_MS) parts.push(`queued ${duration(explain.queue_ms)}`);
  if (explain.waited_for_swap) parts.push(`waited for ${explain.swap_model}`);
  if (explain.evicted?.length) {
    const reason = explain.evict_reason ? ` (${explain.evict_reason})` : "";
    parts.push(`evicted ${explain.evicted.join(", ")}${reason}`);
  }
  if (explain.load_ms !== null && explain.load_ms !== undefined) parts.push(`load ${duration(explain.load_ms)}`);
  if (explain.ttfb_ms !== null && explain.ttfb_ms !== undefined) parts.push(`ttfb ${duration(explain.ttfb_ms)}`);
  return parts.join(" · ");
}

/** [label, value] pairs for the row-detail view (every field, "–" when absent). */
export function explainDetails(explain) {
  // Peers' requests, and requests that ended before the router served them, have none.
  if (!explain) return [["Explain", "not recorded for this request"]];
  const ms = (v) => (v === null || v === undefined ? "–" : duration(v));
  return [
    ["Queue wait", ms(explain.queue_ms)],
    ["Waited for swap", explain.waited_for_swap ? `yes — loading ${explain.swap_model}` : "no"],
    ["Evicted", explain.evicted?.length ? explain.evicted.join(", ") : "nothing"],
    ["Evict reason", explain.evict_reason || "–"],
    ["Evict time", ms(explain.evict_ms)],
    ["Load time", ms(explain.load_ms)],
    ["Time to first byte", ms(explain.ttfb_ms)],
    ["Generation", ms(explain.gen_ms)],
  ];
}

/** Tokens per second: "38.20 t/s"; negative means unknown. */
export function rate(value) {
  if (value === null || value === undefined) return "–";
  if (value < 0) return "unknown";
  return `${value.toFixed(2)} t/s`;
}

/** A token count; negative (unknown) → "–". */
export function count(value) {
  return value === null || value === undefined || value < 0 ? "–" : String(value);
}

/** "1.23 s" as the Activity table shows durations. */
export function seconds(ms) {
  return ms === null || ms === undefined || ms < 0 ? "–" : `${(ms / 1000).toFixed(2)} s`;
}
