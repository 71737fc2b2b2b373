// Tiny DOM helpers: build elements without innerHTML, so text from the server
// (model names, log lines, request bodies) can never become markup.

/**
 * h("button", {class: "btn", onclick: fn, "aria-label": "Load"}, "text", childNode)
 * Attributes starting with "on" become event listeners; `null`/`false` skip.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace all children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** "1.5 KB", "3.2 MB" … */
export function bytes(n) {
  if (n === null || n === undefined || n < 0) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/** Milliseconds as "850 ms", "12.3 s", "2 m 5 s"; null → "–". */
export function duration(ms) {
  if (ms === null || ms === undefined || ms < 0) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  return `${Math.floor(s / 60)} m ${Math.round(s % 60)} s`;
}

/** Relative time for a unix-seconds or Date value: "now", "12s ago", "3m ago"… */
export function ago(when) {
  const t = when instanceof Date ? when.getTime() : when * 1000;
  const s = Math.round((Date.now() - t) / 1000);
  if (s < 2) return "now";
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return new Date(t).toISOString().replace("T", " ").slice(0, 19);
}

/** A status dot for a model state. */
export function stateDot(state) {
  const kind =
    state === "ready" ? "ready" : state === "starting" || state === "stopping" ? "busy" : "off";
  return h("span", { class: `dot dot-${kind}`, "aria-hidden": "true" });
}
