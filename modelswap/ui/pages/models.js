// Models: every model's live state (modelStatus events), with load, cancel
// and unload. A load is `GET /upstream/<id>/` — the router starts the model to
// answer it — so the page keeps that fetch's AbortController. Cancelling a
// load aborts the fetch AND asks for an unload: a swap whose waiters all left
// keeps going (another client may want the model), the unload is what stops it.
//
// Rows are keyed by model id and updated in place, so a focused button keeps
// its focus when its model changes state (Load → Cancel → Unload is one button).

import { h, replace, stateDot } from "../js/dom.js";

const TICK_MS = 250; // how often elapsed seconds move while something loads
const INTERNAL_META = new Set(["type", "aliases", "modelID", "peerID"]);

/** `/upstream/<id>/` with each path segment encoded (ids may contain "/"). */
function upstreamPath(id) {
  return `/upstream/${id.split("/").map(encodeURIComponent).join("/")}/`;
}

function modelPath(id) {
  return id.split("/").map(encodeURIComponent).join("/");
}

function seconds(ms) {
  const s = ms / 1000;
  return s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;
}

/** Text for a metadata value: scalars as they are, the rest as compact JSON. */
/** "vram 14 GiB · ram 1.2 GiB": a footprint (bytes per resource) from modelStatus. */
export function footprintText(footprint) {
  const units = [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]];
  const size = (bytes) => {
    for (const [unit, scale] of units) {
      if (bytes >= scale) return `${Number((bytes / scale).toFixed(1))} ${unit}`;
    }
    return `${bytes} B`;
  };
  return Object.entries(footprint || {})
    .filter(([, bytes]) => bytes > 0)
    .map(([name, bytes]) => `${name} ${size(bytes)}`)
    .join(" · ");
}

function metaText(value) {
  return typeof value === "object" && value !== null ? JSON.stringify(value) : String(value);
}

class ModelRow {
  constructor(page, id) {
    this.page = page;
    this.id = id;
    this.dot = h("span");
    this.name = h("span", { class: "model-name" });
    this.ids = h("div", { class: "muted mono model-ids" });
    this.description = h("div", { class: "model-description" });
    this.meta = h("div", { class: "model-meta" });
    this.footprint = h("div", { class: "muted mono model-footprint" });
    this.stateText = h("span", { class: "state-text" });
    this.bar = h("span");
    this.progress = h(
      "div",
      { class: "progress load-bar", role: "progressbar", "aria-label": `Loading ${id}` },
      this.bar,
    );
    this.progressText = h("span", { class: "muted load-text" });
    this.loadBox = h("div", { class: "load-progress", hidden: true }, this.progress, this.progressText);
    this.error = h("div", { class: "error model-error", role: "alert" });
    this.button = h("button", { type: "button", onclick: () => this.act() });
    this.action = null;
    this.el = h(
      "li",
      { class: "model-row", dataset: { model: id } },
      this.dot,
      h("div", { class: "model-main" }, h("div", { class: "row" }, this.name), this.ids, this.description, this.meta, this.footprint),
      h("div", { class: "model-status" }, this.stateText, this.loadBox, this.error),
      h("div", { class: "model-action" }, this.button),
    );
  }

  /** Update everything from the latest status entry and /v1/models record. */
  update(model, record) {
    const page = this.page;
    const peer = Boolean(model.peerID);
    const meta = record?.meta?.llamaswap || {};
    const aliases = model.aliases || meta.aliases || [];
    this.el.classList.toggle("peer", peer);
    this.dot.replaceWith((this.dot = peer ? h("span", { class: "dot dot-peer", "aria-hidden": "true" }) : stateDot(model.state)));
    const tags = [];
    if (peer) tags.push(h("span", { class: "tag" }, "peer"));
    if (model.unlisted) tags.push(h("span", { class: "tag" }, "unlisted"));
    replace(this.name, model.name || record?.name || model.id, " ", tags);
    const idParts = [];
    if (model.name) idParts.push(model.id);
    if (peer) idParts.push(`via ${model.peerID}`);
    if (aliases.length) idParts.push(`aliases: ${aliases.join(", ")}`);
    replace(this.ids, idParts.join(" · "));
    this.ids.hidden = idParts.length === 0;
    const description = model.description || record?.description || "";
    replace(this.description, description);
    this.description.hidden = !description;
    const metadata = Object.entries(meta).filter(([key]) => !INTERNAL_META.has(key));
    replace(
      this.meta,
      metadata.map(([key, value]) => h("span", { class: "tag meta-tag" }, `${key}: ${metaText(value)}`)),
    );
    this.meta.hidden = metadata.length === 0;
    const memory = footprintText(model.footprint);
    replace(this.footprint, memory ? `memory: ${memory}` : "");
    this.footprint.hidden = !memory;

    const failure = page.errors.get(this.id);
    replace(this.error, failure || "");
    this.error.hidden = !failure;

    if (peer) {
      replace(this.stateText, "served by a peer");
      this.loadBox.hidden = true;
      this.button.hidden = true;
      this.action = null;
      return;
    }
    const loading = page.isLoading(model);
    const cancelling = page.cancelling.has(this.id);
    const unloading = page.unloading.has(this.id);
    let stateText = model.state || "stopped";
    if (cancelling) stateText = "cancelling";
    else if (loading && model.state !== "starting") stateText = "waiting to load";
    replace(this.stateText, stateText);
    this.loadBox.hidden = !loading;
    if (loading) this.updateProgress(model);

    let label;
    let text;
    let disabled = false;
    if (loading) {
      this.action = "cancel";
      text = cancelling ? "Cancelling…" : "Cancel";
      label = `Cancel loading ${this.id}`;
      disabled = cancelling;
    } else if (model.state === "ready") {
      this.action = "unload";
      text = unloading ? "Unloading…" : "Unload";
      label = `Unload ${this.id}`;
      disabled = unloading;
    } else if (model.state === "stopping" || model.state === "shutdown" || unloading) {
      this.action = null;
      text = model.state === "shutdown" ? "Shut down" : "Stopping…";
      label = `${this.id} is stopping`;
      disabled = true;
    } else {
      this.action = "load";
      text = "Load";
      label = `Load ${this.id}`;
    }
    this.button.hidden = false;
    this.button.textContent = text;
    this.button.setAttribute("aria-label", label);
    this.button.disabled = disabled;
    this.button.className = this.action === "cancel" ? "danger" : this.action === "load" ? "primary" : "";
  }

  /** The bar and "3.2 s of ~12 s" from the latest loadProgress, moved on by local time. */
  updateProgress(model) {
    const { elapsed, expected } = this.page.loadTimes(model.id);
    if (expected) {
      const fraction = Math.min(elapsed / expected, 0.99);
      this.progress.classList.remove("indeterminate");
      this.progress.setAttribute("aria-valuemin", "0");
      this.progress.setAttribute("aria-valuemax", "100");
      this.progress.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
      this.bar.style.width = `${(fraction * 100).toFixed(1)}%`;
      const over = elapsed > expected ? " (taking longer than usual)" : "";
      this.progressText.textContent = `${seconds(elapsed)} of ~${seconds(expected)}${over}`;
    } else {
      this.progress.classList.add("indeterminate");
      this.progress.removeAttribute("aria-valuenow");
      this.bar.style.width = "";
      this.progressText.textContent = `${seconds(elapsed)} · first load, no estimate yet`;
    }
  }

  act() {
    if (this.action === "load") this.page.load(this.id);
    else if (this.action === "cancel") this.page.cancel(this.id);
    else if (this.action === "unload") this.page.unload(this.id);
  }
}

class ModelsPage {
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.events = ctx.events;
    this.rows = new Map(); // id → ModelRow
    this.records = new Map(); // id → /v1/models record
    this.pending = new Map(); // id → { controller, startedAt } for loads this page started
    this.cancelling = new Set();
    this.unloading = new Set();
    this.errors = new Map(); // id → last action error
    this.unloadingAll = false;
    this.timer = null;
    // model → newest loadProgress, by swap id: a swap cancelled by an unload
    // may keep reporting, and must not overwrite the newer swap's progress.
    this.progress = new Map(ctx.events.state.loading);

    this.summary = h("span", { class: "muted" });
    this.unloadAll = h(
      "button",
      { type: "button", "aria-label": "Unload all models", onclick: () => this.unloadEverything() },
      "Unload all",
    );
    this.notice = h("p", { class: "error", role: "alert", hidden: true });
    this.localList = h("ul", { class: "model-list", "aria-label": "Local models" });
    this.localEmpty = h("p", { class: "muted" }, "Waiting for model status…");
    this.peerList = h("ul", { class: "model-list", "aria-label": "Peer models" });
    this.peerCard = h("div", { class: "card", hidden: true }, h("h2", {}, "Peer models"), this.peerList);
    root.append(
      h("div", { class: "card models-header row" }, h("h2", {}, "Models"), this.summary, h("span", { class: "spacer" }), this.unloadAll),
      this.notice,
      h("div", { class: "card" }, h("h2", {}, "Local models"), this.localEmpty, this.localList),
      this.peerCard,
    );
  }

  start() {
    const render = () => this.render();
    this.unsubscribe = [
      this.events.on("modelStatus", render),
      this.events.on("loadProgress", (data) => {
        this.noteProgress(data);
        render();
      }),
      this.events.on("connection", (state) => {
        if (state === "connected") {
          this.progress = new Map(this.events.state.loading); // swap ids restart with the server
          this.fetchRecords();
        }
        render();
      }),
    ];
    this.fetchRecords();
    this.render();
  }

  stop() {
    for (const off of this.unsubscribe || []) off();
    clearInterval(this.timer);
    this.timer = null;
    // Leaving the page abandons this page's loads (their fetches end with it);
    // the router keeps loading — another client may be waiting for the model.
    for (const { controller } of this.pending.values()) controller.abort();
    this.pending.clear();
  }

  /** /v1/models records carry aliases and user metadata (`meta.llamaswap`). */
  async fetchRecords() {
    try {
      const listing = await this.ctx.api.getJSON("/v1/models", { signal: this.ctx.signal });
      this.records = new Map((listing.data || []).map((record) => [record.id, record]));
      this.render();
    } catch (error) {
      if (error.name !== "AbortError") this.showNotice(`Could not read /v1/models: ${error.message}`);
    }
  }

  noteProgress(data) {
    const current = this.progress.get(data.model);
    if (current && data.swap_id < current.swap_id) return;
    if (data.phase === "ready" || data.phase === "failed") this.progress.delete(data.model);
    else this.progress.set(data.model, { ...data, receivedAt: performance.now() });
  }

  showNotice(message) {
    this.notice.textContent = message || "";
    this.notice.hidden = !message;
  }

  /**
   * Loading, as far as this page can tell: the process is starting, or this
   * page's load request is pending, or the router is evicting others for it.
   */
  isLoading(model) {
    if (model.peerID) return false;
    if (model.state === "starting" || this.pending.has(model.id)) return true;
    const progress = this.progress.get(model.id);
    return progress?.phase === "evicting" && model.state !== "ready";
  }

  /** Elapsed and expected ms of a model's load, moving with local time. */
  loadTimes(id) {
    const progress = this.progress.get(id);
    const now = performance.now();
    if (progress) {
      return {
        elapsed: progress.elapsed_ms + (now - progress.receivedAt),
        expected: progress.expected_ms || null,
      };
    }
    const mine = this.pending.get(id);
    return { elapsed: mine ? now - mine.startedAt : 0, expected: null };
  }

  render() {
    const models = this.events.state.models;
    const local = models.filter((m) => !m.peerID);
    const peers = models.filter((m) => m.peerID);
    const seen = new Set();
    this.renderList(this.localList, local, seen);
    this.renderList(this.peerList, peers, seen);
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) {
        row.el.remove();
        this.rows.delete(id);
      }
    }
    this.peerCard.hidden = peers.length === 0;
    const connected = this.events.state.connection === "connected";
    this.localEmpty.hidden = local.length > 0;
    this.localEmpty.textContent = connected ? "No local models configured." : "Waiting for model status…";
    const ready = local.filter((m) => m.state === "ready").length;
    const loading = local.filter((m) => this.isLoading(m)).length;
    const parts = [`${local.length} local`, `${ready} ready`];
    if (loading) parts.push(`${loading} loading`);
    if (peers.length) parts.push(`${peers.length} from peers`);
    this.summary.textContent = parts.join(" · ");
    const busy = local.some((m) => m.state !== "stopped" && m.state !== "shutdown");
    this.unloadAll.disabled = this.unloadingAll || !busy;
    this.unloadAll.textContent = this.unloadingAll ? "Unloading…" : "Unload all";
    this.tick(loading > 0);
  }

  renderList(list, models, seen) {
    let previous = null;
    for (const model of models) {
      seen.add(model.id);
      let row = this.rows.get(model.id);
      if (!row) {
        row = new ModelRow(this, model.id);
        this.rows.set(model.id, row);
      }
      row.update(model, this.records.get(model.id));
      // Keep the server's order without re-inserting rows that are in place
      // (moving a node would drop the focus of its button).
      const expected = previous ? previous.nextSibling : list.firstChild;
      if (expected !== row.el) list.insertBefore(row.el, expected);
      previous = row.el;
    }
  }

  /** While anything loads, move the elapsed times every TICK_MS. */
  tick(active) {
    if (active && !this.timer) {
      this.timer = setInterval(() => {
        for (const model of this.events.state.models) {
          const row = this.rows.get(model.id);
          if (row && this.isLoading(model)) row.updateProgress(model);
        }
      }, TICK_MS);
    } else if (!active && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  async load(id) {
    if (this.pending.has(id)) return;
    const controller = new AbortController();
    this.pending.set(id, { controller, startedAt: performance.now() });
    this.errors.delete(id);
    this.render();
    try {
      const response = await fetch(`${upstreamPath(id)}?_=${Date.now()}`, { signal: controller.signal });
      if (response.status >= 500) {
        let message = `${response.status} ${response.statusText}`;
        try {
          message = (await response.json())?.error?.message || message;
        } catch {
          /* not JSON */
        }
        this.errors.set(id, `Load failed: ${message}`);
      } else {
        // Only the model starting matters, not what its own web page says.
        response.body?.cancel().catch(() => {});
      }
    } catch (error) {
      if (error.name !== "AbortError") this.errors.set(id, `Load failed: ${error.message}`);
    } finally {
      if (this.pending.get(id)?.controller === controller) this.pending.delete(id);
      if (!this.ctx.signal.aborted) this.render();
    }
  }

  async cancel(id) {
    this.pending.get(id)?.controller.abort();
    this.pending.delete(id);
    this.cancelling.add(id);
    this.render();
    try {
      await this.ctx.api.send(`/api/models/unload/${modelPath(id)}`, undefined, { signal: this.ctx.signal });
    } catch (error) {
      if (error.name !== "AbortError") this.errors.set(id, `Cancel failed: ${error.message}`);
    } finally {
      this.cancelling.delete(id);
      if (!this.ctx.signal.aborted) this.render();
    }
  }

  async unload(id) {
    this.unloading.add(id);
    this.errors.delete(id);
    this.render();
    try {
      await this.ctx.api.send(`/api/models/unload/${modelPath(id)}`, undefined, { signal: this.ctx.signal });
    } catch (error) {
      if (error.name !== "AbortError") this.errors.set(id, `Unload failed: ${error.message}`);
    } finally {
      this.unloading.delete(id);
      if (!this.ctx.signal.aborted) this.render();
    }
  }

  async unloadEverything() {
    this.unloadingAll = true;
    this.showNotice("");
    for (const { controller } of this.pending.values()) controller.abort();
    this.pending.clear();
    this.render();
    try {
      await this.ctx.api.send("/api/models/unload", undefined, { signal: this.ctx.signal });
    } catch (error) {
      if (error.name !== "AbortError") this.showNotice(`Unload all failed: ${error.message}`);
    } finally {
      this.unloadingAll = false;
      if (!this.ctx.signal.aborted) this.render();
    }
  }
}

export default {
  title: "Models",
  mount(root, ctx) {
    const page = new ModelsPage(root, ctx);
    page.start();
    return () => page.stop();
  },
};
