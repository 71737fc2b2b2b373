// A request's capture in a modal <dialog> (Esc or Close closes it): request
// path, headers and body; response headers and body. Bodies arrive base64;
// they are decoded to UTF-8, JSON is pretty-printed, and a text/event-stream
// response is also shown reassembled (content and reasoning deltas joined).

import { h, replace } from "./dom.js";

/** base64 → UTF-8 text (invalid bytes become U+FFFD). */
export function decodeBase64(b64) {
  if (!b64) return "";
  const binary = atob(b64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return new TextDecoder().decode(bytes);
}

/** Indented JSON when `text` parses, else null. */
export function prettyJSON(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return null;
  }
}

/** An SSE body's chat text: {content, reasoning} from every data: event. */
export function reassembleSSE(text) {
  let content = "";
  let reasoning = "";
  for (const line of text.split("\n")) {
    if (!line.startsWith("data:")) continue;
    const payload = line.slice(5).trim();
    if (!payload || payload === "[DONE]") continue;
    let data;
    try {
      data = JSON.parse(payload);
    } catch {
      continue;
    }
    const delta = data.choices?.[0]?.delta;
    if (delta) {
      content += delta.content || "";
      reasoning += delta.reasoning_content || delta.reasoning || "";
    } else if (data.choices?.[0]?.text) {
      content += data.choices[0].text; // /v1/completions
    } else if (data.type === "content_block_delta") {
      content += data.delta?.text || ""; // Anthropic
      reasoning += data.delta?.thinking || "";
    } else if (data.type === "response.output_text.delta") {
      content += data.delta || ""; // Responses API
    } else if (typeof data.content === "string") {
      content += data.content; // llama-server /completion
    }
  }
  return { content, reasoning };
}

function headersTable(headers) {
  const entries = Object.entries(headers || {});
  if (!entries.length) return h("p", { class: "muted" }, "none");
  return h(
    "table",
    { class: "headers" },
    h(
      "tbody",
      {},
      entries.map(([name, value]) => h("tr", {}, h("th", { scope: "row" }, name), h("td", { class: "mono" }, value))),
    ),
  );
}

function contentType(headers) {
  for (const [name, value] of Object.entries(headers || {})) {
    if (name.toLowerCase() === "content-type") return String(value);
  }
  return "";
}

function bodyView(b64, headers, label) {
  if (b64 === null || b64 === undefined) return h("p", { class: "muted" }, "not captured");
  const text = decodeBase64(b64);
  if (!text) return h("p", { class: "muted" }, "empty");
  const blocks = [];
  if (contentType(headers).includes("text/event-stream")) {
    const { content, reasoning } = reassembleSSE(text);
    if (reasoning) blocks.push(h("h4", {}, "Reasoning (reassembled)"), h("pre", { class: "capture-body" }, reasoning));
    blocks.push(h("h4", {}, "Text (reassembled)"), h("pre", { class: "capture-body reassembled" }, content || "—"));
    blocks.push(h("details", {}, h("summary", {}, "Raw stream"), h("pre", { class: "capture-body" }, text)));
  } else {
    const pretty = prettyJSON(text);
    blocks.push(h("pre", { class: `capture-body ${label}` }, pretty ?? text));
  }
  return blocks;
}

/** The capture's sections, as nodes (exported for tests and reuse). */
export function captureView(capture) {
  return [
    h("p", {}, h("strong", {}, "Path "), h("code", {}, capture.req_path || "")),
    h("h3", {}, "Request headers"),
    headersTable(capture.req_headers),
    h("h3", {}, "Request body"),
    h("div", { class: "capture-request" }, bodyView(capture.req_body, capture.req_headers, "request-body")),
    h("h3", {}, "Response headers"),
    headersTable(capture.resp_headers),
    h("h3", {}, "Response body"),
    h("div", { class: "capture-response" }, bodyView(capture.resp_body, capture.resp_headers, "response-body")),
  ];
}

/**
 * The page's one capture dialog: `open(id)` fetches /api/captures/<id> and
 * shows it; focus returns to the opener when it closes.
 */
export function captureDialog(api, signal) {
  const title = h("h2", { id: "capture-title" }, "Capture");
  const body = h("div", { class: "capture-content" });
  const close = h("button", { type: "button", onclick: () => dialog.close() }, "Close");
  const dialog = h(
    "dialog",
    { class: "capture-dialog", "aria-labelledby": "capture-title" },
    h("div", { class: "row dialog-head" }, title, h("span", { class: "spacer" }), close),
    body,
  );
  let opener = null;
  let loading = null;
  dialog.addEventListener("close", () => {
    loading?.abort();
    opener?.focus();
  });
  signal.addEventListener("abort", () => dialog.open && dialog.close());

  async function open(id, from) {
    opener = from || document.activeElement;
    title.textContent = `Capture of request #${id}`;
    replace(body, h("p", { class: "muted" }, "Loading…"));
    dialog.showModal();
    close.focus();
    loading?.abort();
    const controller = new AbortController();
    loading = controller;
    try {
      const capture = await api.getJSON(`/api/captures/${encodeURIComponent(id)}`, { signal: controller.signal });
      replace(body, captureView(capture));
    } catch (error) {
      if (error?.name !== "AbortError") replace(body, h("p", { class: "error", role: "alert" }, error.message));
    }
  }

  return { element: dialog, open };
}
