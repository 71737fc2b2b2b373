// What every Playground request shares: one session id per page load (the
// Activity page's in-flight table shows it, as llama-swap's `lspg-…`), and
// the two request shapes api.js does not cover — a binary answer (speech)
// and a multipart upload (transcription).

import { ApiError } from "./api.js";

function randomId(length) {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

export const SESSION_ID = `ms-pg-${randomId(5)}`;
export const SESSION_HEADERS = Object.freeze({ "X-Session-ID": SESSION_ID });

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      message = body?.error?.message || body?.error || body?.detail || message;
    } catch {
      if (text.trim()) message = text.trim().slice(0, 500);
    }
  } catch {
    /* unreadable body: keep the status line */
  }
  return new ApiError(response.status, String(message));
}

/** POST JSON, answer a Blob (e.g. audio). */
export async function postForBlob(path, body, { signal } = {}) {
  const response = await fetch(path, {
    method: "POST",
    signal,
    headers: { "Content-Type": "application/json", ...SESSION_HEADERS },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response);
  return response.blob();
}

/** POST a FormData (multipart), answer parsed JSON or text. */
export async function postForm(path, form, { signal } = {}) {
  const response = await fetch(path, { method: "POST", signal, headers: SESSION_HEADERS, body: form });
  if (!response.ok) throw await failure(response);
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.text();
}

/** True for the error an aborted fetch throws (Stop / Cancel / leaving the page). */
export function isAbort(error) {
  return error?.name === "AbortError";
}
