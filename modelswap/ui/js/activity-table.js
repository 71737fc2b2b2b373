// The Activity requests table: one page of rows from /api/metrics/activity,
// sortable headers (the API's sort keys), a compact explain cell, and a
// row-detail view with the whole breakdown. Rendering only: the page owns
// fetching, paging and the capture dialog.

import { h, replace, ago } from "./dom.js";
import { count, explainDetails, explainSummary, rate, seconds } from "./explain.js";

/** [key, label, API sort key or null, numeric?] */
export const COLUMNS = [
  ["id", "ID", "id", true],
  ["time", "Time", "time", false],
  ["model", "Model", "model", false],
  ["path", "Path", "req_path", false],
  ["status", "Status", "resp_status_code", false],
  ["prompt", "Prompt", "prompt", true],
  ["generated", "Generated", "generated", true],
  ["prefill", "Prefill", "prompt_speed", true],
  ["decode", "Decode", "gen_speed", true],
  ["duration", "Duration", "duration", true],
  ["explain", "Explain", null, false],
  ["capture", "", null, false],
];

function rowTime(row) {
  return Date.parse(row.timestamp) / 1000;
}

/**
 * activityTable({onSort, onCapture}) → {element, render(rows, sort, order), tick()}.
 */
export function activityTable({ onSort, onCapture }) {
  const head = h("thead", {});
  const body = h("tbody", {});
  const element = h("table", { class: "activity-table", "data-testid": "activity-table" }, head, body);
  const expanded = new Set();
  let timeCells = [];

  function header(sort, order) {
    return h(
      "tr",
      {},
      COLUMNS.map(([key, label, sortKey, numeric]) => {
        const attrs = { scope: "col", class: `c-${key}${numeric ? " num" : ""}` };
        if (!sortKey) return h("th", attrs, label || h("span", { class: "visually-hidden" }, "Capture"));
        const active = sort === sortKey;
        attrs["aria-sort"] = active ? (order === "asc" ? "ascending" : "descending") : "none";
        const arrow = active ? (order === "asc" ? " ▴" : " ▾") : "";
        return h(
          "th",
          attrs,
          h("button", { type: "button", class: "sort", "data-sort": sortKey, onclick: () => onSort(sortKey) }, label, arrow),
        );
      }),
    );
  }

  function detailRow(row) {
    const tokens = row.tokens || {};
    const facts = [
      ["Timestamp", row.timestamp],
      ["Content type", row.resp_content_type || "–"],
      ["Cached tokens", count(tokens.cache_tokens)],
      ["Drafted / accepted", tokens.draft_tokens > 0 ? `${tokens.draft_tokens} / ${tokens.draft_acc_tokens}` : "–"],
      ...explainDetails(row.explain),
      ["Total duration", seconds(row.duration_ms)],
    ];
    for (const [key, value] of Object.entries(row.metadata || {})) facts.push([`meta.${key}`, JSON.stringify(value)]);
    if (row.error_msg) facts.push(["Error", row.error_msg]);
    return h(
      "tr",
      { class: "detail", id: `activity-detail-${row.id}`, "data-detail": row.id },
      h(
        "td",
        { colspan: COLUMNS.length },
        h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      ),
    );
  }

  function rowView(row) {
    const tokens = row.tokens || {};
    const ok = row.resp_status_code >= 200 && row.resp_status_code < 400;
    const open = expanded.has(row.id);
    const toggle = h(
      "button",
      {
        type: "button",
        class: "expander",
        "aria-expanded": String(open),
        "aria-controls": `activity-detail-${row.id}`,
        "aria-label": `Details of request ${row.id}`,
      },
      open ? "▾" : "▸",
    );
    const time = h("td", { class: "c-time", title: row.timestamp }, ago(rowTime(row)));
    timeCells.push([time, rowTime(row)]);
    const capture = row.has_capture
      ? h("button", { type: "button", class: "small", "aria-label": `Capture of request ${row.id}` }, "Capture")
      : "";
    if (capture) capture.addEventListener("click", () => onCapture(row.id, capture));
    const summary = explainSummary(row.explain);
    const tr = h(
      "tr",
      { "data-id": row.id, class: ok ? null : "failed" },
      h("td", { class: "c-id num" }, toggle, " ", String(row.id)),
      time,
      h("td", { class: "c-model" }, row.model),
      h("td", { class: "c-path mono" }, row.req_path),
      h(
        "td",
        { class: "c-status" },
        h("span", { class: ok ? "status-ok" : "status-bad" }, String(row.resp_status_code)),
        row.error_msg ? h("div", { class: "error small-text" }, row.error_msg) : "",
      ),
      h("td", { class: "c-prompt num" }, count(tokens.input_tokens)),
      h("td", { class: "c-generated num" }, count(tokens.output_tokens)),
      h("td", { class: "c-prefill num" }, rate(tokens.prompt_per_second)),
      h("td", { class: "c-decode num" }, rate(tokens.tokens_per_second)),
      h("td", { class: "c-duration num" }, seconds(row.duration_ms)),
      h("td", { class: "c-explain", title: summary }, summary || h("span", { class: "muted" }, "–")),
      h("td", { class: "c-capture" }, capture),
    );
    toggle.addEventListener("click", () => {
      if (expanded.has(row.id)) {
        expanded.delete(row.id);
        tr.nextElementSibling?.remove();
      } else {
        expanded.add(row.id);
        tr.after(detailRow(row));
      }
      const now = expanded.has(row.id);
      toggle.setAttribute("aria-expanded", String(now));
      toggle.textContent = now ? "▾" : "▸";
    });
    return open ? [tr, detailRow(row)] : [tr];
  }

  return {
    element,
    render(rows, sort, order, emptyText = "No requests recorded yet.") {
      timeCells = [];
      replace(head, header(sort, order));
      if (!rows.length) {
        replace(body, h("tr", {}, h("td", { colspan: COLUMNS.length, class: "muted empty" }, emptyText)));
        return;
      }
      replace(body, rows.map(rowView));
    },
    tick() {
      for (const [cell, when] of timeCells) cell.textContent = ago(when);
    },
  };
}
