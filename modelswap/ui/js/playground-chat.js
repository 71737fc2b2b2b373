// The Playground's Chat tab: streamed /v1/chat/completions.
//
// Content deltas (`choices[0].delta.content`) are appended as they arrive;
// `reasoning_content` (thinking models, and llama-swap's loading-state text
// while a model starts) goes to a collapsible "Reasoning" block, open while it
// streams. Errors — the HTTP error envelope, or an SSE `data:` event carrying
// one — are shown in the reply. The conversation lives at module level, so it
// survives leaving the page; a stream in progress is stopped on leaving.

import { h, replace, duration } from "./dom.js";
import { render } from "./markdown.js";
import { modelPicker } from "./model-picker.js";
import { SESSION_HEADERS, isAbort } from "./playground-http.js";

const conversation = { messages: [] }; // {role, content, model?, reasoning?, error?, …}

function now() {
  return performance.now();
}

/** The request's `messages`: what was said, without failed or empty replies. */
export function history(messages) {
  return messages
    .filter((m) => !m.error && (m.role === "user" || m.content))
    .map(({ role, content }) => ({ role, content }));
}

/** Fold one SSE payload into a reply (pure apart from the clock). */
export function applyChunk(reply, data) {
  if (data === "[DONE]") return;
  if (data?.error) {
    const error = data.error;
    reply.error = typeof error === "string" ? error : error.message || JSON.stringify(error);
    return;
  }
  const delta = data?.choices?.[0]?.delta || {};
  const thought = delta.reasoning_content ?? delta.reasoning;
  if (thought) {
    reply.reasoning += thought;
    reply.thinkStart ??= now();
    reply.thinkEnd = now();
  }
  if (delta.content) reply.content += delta.content;
  if (data.usage) reply.usage = data.usage;
  if (data.timings) reply.timings = data.timings;
}

function usageText(reply) {
  const parts = [];
  const usage = reply.usage;
  const timings = reply.timings;
  const prompt = usage?.prompt_tokens ?? timings?.prompt_n;
  const generated = usage?.completion_tokens ?? timings?.predicted_n;
  if (prompt !== undefined) parts.push(`${prompt} prompt tokens`);
  if (generated !== undefined) parts.push(`${generated} generated`);
  if (timings?.predicted_per_second > 0) parts.push(`${timings.predicted_per_second.toFixed(1)} t/s`);
  if (reply.elapsed !== undefined) parts.push(duration(reply.elapsed));
  if (reply.stopped) parts.push("stopped");
  return parts.join(" · ");
}

/** One message's element and a function that redraws it from the message. */
function messageView(message) {
  const role = h("div", { class: "msg-role" });
  const body = h("div", { class: "msg-content" });
  const el = h("article", { class: `msg msg-${message.role}`, "data-role": message.role }, role, body);
  if (message.role === "user") {
    role.textContent = "you";
    body.append(render(message.content));
    return { el, update() {} };
  }
  role.textContent = message.model || "assistant";
  const summary = h("summary", {});
  const thoughts = h("pre", { class: "reasoning-text" });
  const details = h("details", { class: "reasoning", hidden: true }, summary, thoughts);
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const meta = h("div", { class: "msg-meta muted" });
  el.insertBefore(details, body);
  el.append(error, meta);
  let userToggled = false;
  summary.addEventListener("click", () => {
    userToggled = true;
  });
  let shownReasoning = -1;
  let shownContent = null;
  return {
    el,
    update() {
      el.classList.toggle("streaming", !message.done);
      if (message.reasoning.length !== shownReasoning) {
        shownReasoning = message.reasoning.length;
        details.hidden = !message.reasoning;
        thoughts.textContent = message.reasoning;
        thoughts.scrollTop = thoughts.scrollHeight;
      }
      const thinking = message.thinkStart === undefined ? "" : ` · ${duration(message.thinkEnd - message.thinkStart)}`;
      summary.textContent = `Reasoning · ${message.reasoning.length} chars${thinking}`;
      if (!userToggled) details.open = !message.done && !message.content;
      if (shownContent !== message.content) {
        shownContent = message.content;
        replace(body, message.content ? render(message.content) : "");
      }
      body.classList.toggle("pending", !message.done && !message.content);
      error.hidden = !message.error;
      error.textContent = message.error || "";
      meta.textContent = message.done ? usageText(message) : "";
    },
  };
}

/** chatTab(ctx) → the tab's element. */
export function chatTab({ api, events, signal }) {
  const picker = modelPicker({ api, events, signal, key: "chat" });
  const list = h("div", { class: "chat-messages", "aria-live": "polite", "data-testid": "messages" });
  const input = h("textarea", {
    id: "chat-input",
    rows: 3,
    placeholder: "Message (Enter sends, Shift+Enter for a new line)",
  });
  const sendButton = h("button", { type: "button", class: "primary", onclick: () => send() }, "Send");
  const stopButton = h("button", { type: "button", disabled: true, onclick: () => stop() }, "Stop");
  const newButton = h("button", { type: "button", onclick: () => newChat() }, "New chat");
  const notice = h("p", { class: "error", role: "alert", hidden: true });
  let controller = null;
  let frame = 0;
  const views = new Map();

  function viewOf(message) {
    if (!views.has(message)) views.set(message, messageView(message));
    return views.get(message);
  }

  function redrawAll() {
    replace(list);
    if (!conversation.messages.length) {
      list.append(h("p", { class: "muted chat-empty" }, "Pick a model and say something."));
    }
    for (const message of conversation.messages) {
      const view = viewOf(message);
      view.update();
      list.append(view.el);
    }
    list.scrollTop = list.scrollHeight;
  }

  function scheduleUpdate(message) {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
      viewOf(message).update();
      if (stick) list.scrollTop = list.scrollHeight;
    });
  }

  function setBusy(busy) {
    sendButton.disabled = busy;
    stopButton.disabled = !busy;
  }

  async function send() {
    const text = input.value.trim();
    if (!text || controller) return;
    const model = picker.value;
    notice.hidden = !!model;
    notice.textContent = model ? "" : "Pick a model first.";
    if (!model) return;
    input.value = "";
    const request = history([...conversation.messages, { role: "user", content: text }]);
    conversation.messages.push({ role: "user", content: text });
    const reply = { role: "assistant", model, content: "", reasoning: "", error: "", done: false };
    conversation.messages.push(reply);
    redrawAll();
    controller = new AbortController();
    const mine = controller;
    const started = now();
    setBusy(true);
    try {
      await api.streamSSE(
        "/v1/chat/completions",
        { model, messages: request, stream: true, stream_options: { include_usage: true } },
        (data) => {
          applyChunk(reply, data);
          scheduleUpdate(reply);
        },
        { signal: mine.signal, headers: SESSION_HEADERS },
      );
    } catch (error) {
      if (isAbort(error)) reply.stopped = true;
      else reply.error = error.message || String(error);
    } finally {
      reply.done = true;
      reply.elapsed = now() - started;
      if (controller === mine) controller = null;
      setBusy(false);
      scheduleUpdate(reply);
    }
  }

  function stop() {
    controller?.abort();
  }

  function newChat() {
    stop();
    conversation.messages = [];
    views.clear();
    redrawAll();
    input.focus();
  }

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  signal.addEventListener("abort", () => {
    stop();
    cancelAnimationFrame(frame);
  });

  redrawAll();
  return h(
    "div",
    { class: "chat" },
    h("div", { class: "row" }, picker.element, newButton),
    list,
    h("label", { for: "chat-input", class: "visually-hidden" }, "Message"),
    input,
    notice,
    h("div", { class: "row" }, sendButton, stopButton),
  );
}
