// Logs: the proxy's and the upstreams' logs from the shared event stream, or
// one model's own log followed over `GET /logs/stream/<id>`. A filter box
// (case-insensitive text, or /regex/), Pause/Resume (paused: keep receiving,
// count what waits, catch up on resume) and auto-scroll that stops while the
// reader is scrolled up. At most LIMIT characters are kept, like the server.

import { h, replace } from "../js/dom.js";

const LIMIT = 100 * 1024;
const STICK_PX = 40; // within this of the bottom counts as "following"
const SOURCE_KEY = "modelswap.logs.source";

/** Keep the last `limit` characters, starting at a line boundary when there is one. */
function trim(text, limit = LIMIT) {
  if (text.length <= limit) return text;
  const cut = text.length - limit;
  const newline = text.indexOf("\n", cut);
  return newline >= 0 && newline - cut < 1024 ? text.slice(newline + 1) : text.slice(cut);
}

/**
 * A line predicate from the filter box: `/re/` is a case-insensitive regex;
 * anything else (including a regex that does not compile) a substring.
 */
export function lineFilter(query) {
  if (!query) return null;
  if (query.length > 2 && query.startsWith("/") && query.endsWith("/")) {
    try {
      const re = new RegExp(query.slice(1, -1), "i");
      return (line) => re.test(line);
    } catch {
      /* not a valid regex: fall through to a substring */
    }
  }
  const needle = query.toLowerCase();
  return (line) => line.toLowerCase().includes(needle);
}

function countLines(text) {
  let n = 0;
  for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", i + 1)) n++;
  return n;
}

class LogsPage {
  constructor(root, ctx) {
    this.ctx = ctx;
    this.events = ctx.events;
    this.source = ctx.params[0] || localStorage.getItem(SOURCE_KEY) || "proxy";
    this.text = ""; // what is shown (before filtering)
    this.held = ""; // received while paused
    this.paused = false;
    this.stick = true;
    this.filter = null;
    this.frame = 0;
    this.follow = null; // AbortController of a model's log stream

    this.picker = h("select", { id: "log-source", onchange: () => this.pick(this.picker.value) });
    this.query = h("input", {
      id: "log-filter",
      type: "search",
      placeholder: "text or /regex/",
      autocomplete: "off",
      oninput: () => {
        this.filter = lineFilter(this.query.value.trim());
        this.render();
      },
    });
    this.pauseButton = h("button", { type: "button", "aria-pressed": "false", onclick: () => this.togglePause() }, "Pause");
    this.newLines = h("span", { class: "tag log-new", role: "status", hidden: true });
    this.counts = h("span", { class: "muted log-counts" });
    this.status = h("p", { class: "muted log-status", role: "status" });
    this.view = h("pre", { class: "log", tabindex: "0", "aria-label": "Log output" });
    this.view.addEventListener("scroll", () => {
      const distance = this.view.scrollHeight - this.view.scrollTop - this.view.clientHeight;
      this.stick = distance <= STICK_PX;
    });
    root.append(
      h(
        "div",
        { class: "row log-toolbar" },
        h("label", { for: "log-source" }, "Source"),
        this.picker,
        h("label", { for: "log-filter" }, "Filter"),
        this.query,
        this.pauseButton,
        this.newLines,
        h("span", { class: "spacer" }),
        this.counts,
      ),
      this.status,
      this.view,
    );
  }

  start() {
    this.unsubscribe = [
      this.events.on("modelStatus", () => this.fillPicker()),
      this.events.on("logs", ({ source, chunk }) => {
        if (source === this.source) this.receive(chunk);
      }),
      this.events.on("connection", (state) => {
        // A reconnect replays the history from empty: start over with it.
        if (state === "connected" && this.isShared()) this.reset(this.events.state.logs[this.source]);
      }),
    ];
    this.fillPicker();
    this.pick(this.source);
  }

  stop() {
    for (const off of this.unsubscribe || []) off();
    this.follow?.abort();
    cancelAnimationFrame(this.frame);
  }

  isShared() {
    return this.source === "proxy" || this.source === "upstream";
  }

  /** Proxy, Upstream, then every local model (kept in sync with modelStatus). */
  fillPicker() {
    const models = this.events.state.models.filter((m) => !m.peerID).map((m) => m.id);
    if (!this.isShared() && !models.includes(this.source)) models.unshift(this.source);
    const wanted = ["proxy", "upstream", ...models].join("\n");
    if (this.picker.dataset.options === wanted) return;
    this.picker.dataset.options = wanted;
    replace(
      this.picker,
      h("option", { value: "proxy" }, "Proxy"),
      h("option", { value: "upstream" }, "Upstream"),
      models.length ? h("optgroup", { label: "Models" }, models.map((id) => h("option", { value: id }, id))) : null,
    );
    this.picker.value = this.source;
  }

  pick(source) {
    this.follow?.abort();
    this.follow = null;
    this.source = source;
    localStorage.setItem(SOURCE_KEY, source);
    this.fillPicker();
    this.picker.value = source;
    this.status.textContent = "";
    this.stick = true;
    if (this.isShared()) {
      this.reset(this.events.state.logs[source]);
    } else {
      this.reset("");
      this.followModel(source);
    }
  }

  async followModel(id) {
    const controller = new AbortController();
    this.follow = controller;
    const path = `/logs/stream/${id.split("/").map(encodeURIComponent).join("/")}`;
    const abort = () => controller.abort();
    this.ctx.signal.addEventListener("abort", abort);
    try {
      await this.ctx.api.followText(path, (chunk) => this.receive(chunk), { signal: controller.signal });
      if (this.follow === controller) this.status.textContent = "The log stream ended.";
    } catch (error) {
      if (error.name !== "AbortError" && this.follow === controller) {
        this.status.textContent = `Could not follow ${id}'s log: ${error.message}`;
      }
    } finally {
      this.ctx.signal.removeEventListener("abort", abort);
    }
  }

  reset(text) {
    this.text = trim(text || "");
    this.held = "";
    this.showHeld();
    this.render();
  }

  receive(chunk) {
    if (this.paused) {
      this.held = trim(this.held + chunk);
      this.showHeld();
      return;
    }
    this.text = trim(this.text + chunk);
    this.schedule();
  }

  togglePause() {
    this.paused = !this.paused;
    this.pauseButton.textContent = this.paused ? "Resume" : "Pause";
    this.pauseButton.setAttribute("aria-pressed", String(this.paused));
    if (!this.paused && this.held) {
      this.text = trim(this.text + this.held);
      this.held = "";
      this.render();
    }
    this.showHeld();
  }

  showHeld() {
    const n = countLines(this.held) + (this.held && !this.held.endsWith("\n") ? 1 : 0);
    this.newLines.hidden = !this.paused;
    this.newLines.textContent = n === 1 ? "1 new line" : `${n} new lines`;
  }

  /** Coalesce bursts of chunks into one repaint per frame. */
  schedule() {
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.render();
      });
    }
  }

  render() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    let shown = this.text;
    const lines = this.text ? this.text.split("\n") : [];
    if (lines.length && lines[lines.length - 1] === "") lines.pop();
    if (this.filter) {
      const kept = lines.filter(this.filter);
      shown = kept.join("\n");
      this.counts.textContent = `${kept.length} of ${lines.length} lines`;
    } else {
      this.counts.textContent = `${lines.length} lines`;
    }
    this.view.textContent = shown;
    if (this.stick) this.view.scrollTop = this.view.scrollHeight;
  }
}

export default {
  title: "Logs",
  mount(root, ctx) {
    const page = new LogsPage(root, ctx);
    page.start();
    return () => page.stop();
  },
};
