// The UI's only way to the server: documented public routes, same origin.
// With apiKeys set, the browser's Basic-auth credentials ride along on every
// request (fetch, EventSource) — no key ever lives in page script.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    message = body?.error?.message || body?.error || message;
  } catch {
    /* not JSON: keep the status line */
  }
  return new ApiError(response.status, message);
}

/** GET a JSON document. */
export async function getJSON(path, { signal } = {}) {
  const response = await fetch(path, { signal, headers: { Accept: "application/json" } });
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** POST (or another method) with a JSON body; returns the parsed JSON or text. */
export async function send(path, body, { method = "POST", signal, headers = {} } = {}) {
  const response = await fetch(path, {
    method,
    signal,
    headers: { "Content-Type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response);
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.text();
}

/**
 * POST a JSON body and read a server-sent-events answer, calling onEvent(data)
 * for each `data:` payload (parsed JSON, or the raw string for [DONE]).
 */
export async function streamSSE(path, body, onEvent, { signal, headers = {} } = {}) {
  const response = await fetch(path, {
    method: "POST",
    signal,
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 1);
      if (!line.startsWith("data:")) continue;
      const payload = line.slice(5).trim();
      if (!payload) continue;
      onEvent(payload === "[DONE]" ? payload : JSON.parse(payload));
    }
  }
  return response;
}

/**
 * Follow a text stream (e.g. /logs/stream/<id>), calling onText(chunk) until
 * the signal aborts or the server ends it.
 */
export async function followText(path, onText, { signal } = {}) {
  const response = await fetch(path, { signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onText(value);
  }
}
