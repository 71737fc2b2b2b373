// Overview: what is running and what it costs. Per running model from
// `GET /api/processes` (pid, uptime, CPU, RSS, GPU memory), and the host from
// the latest `/api/performance` sample (CPU per core, memory, GPUs). Both are
// polled while the page is open; the first performance read asks only for the
// last minute (`?after=`), later ones for what is newer than the last sample.

import { bytes, h, replace, stateDot } from "../js/dom.js";

const POLL_MS = 3000;
const MB = 1024 * 1024;

function uptime(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} m ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} m`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function percent(value) {
  return value === null || value === undefined ? "–" : `${value.toFixed(1)} %`;
}

/** A small horizontal meter with its text, for a share of something. */
function meter(fraction, label, text) {
  const clamped = Math.max(0, Math.min(1, fraction || 0));
  const level = clamped > 0.9 ? "high" : clamped > 0.7 ? "mid" : "low";
  const fill = h("span");
  fill.style.width = `${(clamped * 100).toFixed(1)}%`; // CSSOM: allowed under a strict CSP
  return h(
    "div",
    { class: "meter-row" },
    h("span", { class: "meter-label" }, label),
    h(
      "div",
      {
        class: `progress meter meter-${level}`,
        role: "meter",
        "aria-label": label,
        "aria-valuemin": "0",
        "aria-valuemax": "100",
        "aria-valuenow": String(Math.round(clamped * 100)),
      },
      fill,
    ),
    h("span", { class: "meter-text num" }, text),
  );
}

class OverviewPage {
  constructor(root, ctx) {
    this.ctx = ctx;
    this.timer = null;
    this.lastSample = null; // newest sys sample seen
    this.gpus = new Map(); // gpu id → newest sample
    this.performanceOff = false;
    this.processBody = h("div");
    this.hostBody = h("div", {}, h("p", { class: "muted" }, "Reading the performance monitor…"));
    this.updated = h("span", { class: "muted overview-updated" });
    root.append(
      h("div", { class: "card" }, h("div", { class: "row" }, h("h2", {}, "Running models"), h("span", { class: "spacer" }), this.updated), this.processBody),
      h("div", { class: "card" }, h("h2", {}, "Host"), this.hostBody),
    );
  }

  async start() {
    await this.poll();
    if (!this.ctx.signal.aborted) this.timer = setInterval(() => this.poll(), POLL_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async poll() {
    await Promise.all([this.pollProcesses(), this.performanceOff ? null : this.pollPerformance()]);
    if (!this.ctx.signal.aborted) this.updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  async pollProcesses() {
    try {
      const answer = await this.ctx.api.getJSON("/api/processes", { signal: this.ctx.signal });
      this.renderProcesses(answer.processes || []);
    } catch (error) {
      if (error.name === "AbortError") return;
      replace(this.processBody, h("p", { class: "error", role: "alert" }, `Could not read /api/processes: ${error.message}`));
    }
  }

  renderProcesses(processes) {
    if (!processes.length) {
      replace(this.processBody, h("p", { class: "muted" }, "No model is running."));
      return;
    }
    const anyGpu = processes.some((p) => p.gpu_memory_bytes !== null && p.gpu_memory_bytes !== undefined);
    const head = ["Model", "State", "PID", "Uptime", "CPU", "Memory (RSS)", anyGpu ? "GPU memory" : null, "Children"];
    const numeric = new Set(["PID", "Uptime", "CPU", "Memory (RSS)", "GPU memory", "Children"]);
    const rows = processes.map((p) => {
      const children = Array.isArray(p.children) ? p.children.length : p.children;
      return h(
        "tr",
        { dataset: { model: p.model } },
        h("td", {}, h("span", { class: "row" }, stateDot(p.state), h("span", { class: "mono" }, p.model))),
        h("td", { class: "state-text" }, p.state),
        h("td", { class: "num mono pid" }, p.pid ?? "–"),
        h("td", { class: "num" }, uptime(p.uptime_s)),
        h("td", { class: "num" }, percent(p.cpu_percent)),
        h("td", { class: "num rss" }, bytes(p.rss_bytes)),
        anyGpu ? h("td", { class: "num" }, p.gpu_memory_bytes === null ? "–" : bytes(p.gpu_memory_bytes)) : null,
        h("td", { class: "num" }, children ?? "–"),
      );
    });
    replace(
      this.processBody,
      h(
        "table",
        { class: "processes", "aria-label": "Running models" },
        h("thead", {}, h("tr", {}, head.filter(Boolean).map((name) => h("th", { class: numeric.has(name) ? "num" : null, scope: "col" }, name)))),
        h("tbody", {}, rows),
      ),
    );
  }

  async pollPerformance() {
    const after = this.lastSample ? this.lastSample.timestamp : new Date(Date.now() - 60_000).toISOString();
    let answer;
    try {
      const response = await fetch(`/api/performance?after=${encodeURIComponent(after)}`, {
        signal: this.ctx.signal,
        headers: { Accept: "application/json" },
      });
      if (response.status === 503) {
        this.performanceOff = true;
        replace(this.hostBody, h("p", { class: "muted" }, "The performance monitor is disabled (performance.disabled in the config)."));
        return;
      }
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      answer = await response.json();
    } catch (error) {
      if (error.name === "AbortError") return;
      replace(this.hostBody, h("p", { class: "error", role: "alert" }, `Could not read /api/performance: ${error.message}`));
      return;
    }
    const samples = answer.sys_stats || [];
    if (samples.length) this.lastSample = samples[samples.length - 1];
    for (const gpu of answer.gpu_stats || []) this.gpus.set(gpu.id, gpu);
    this.renderHost();
  }

  renderHost() {
    const sample = this.lastSample;
    if (!sample) {
      replace(this.hostBody, h("p", { class: "muted" }, "No sample in the last minute yet."));
      return;
    }
    const cores = sample.cpu_util_per_core || [];
    const average = cores.length ? cores.reduce((a, b) => a + b, 0) / cores.length : 0;
    const memory = [
      meter(sample.mem_used_mb / sample.mem_total_mb, "Memory", `${bytes(sample.mem_used_mb * MB)} of ${bytes(sample.mem_total_mb * MB)}`),
    ];
    if (sample.swap_total_mb > 0) {
      memory.push(meter(sample.swap_used_mb / sample.swap_total_mb, "Swap", `${bytes(sample.swap_used_mb * MB)} of ${bytes(sample.swap_total_mb * MB)}`));
    }
    const gpus = [...this.gpus.values()].sort((a, b) => a.id - b.id);
    replace(
      this.hostBody,
      h(
        "div",
        { class: "host-grid" },
        h(
          "section",
          { "aria-label": "CPU" },
          h("h3", {}, `CPU · ${cores.length} cores · ${average.toFixed(0)} % average`),
          h("div", { class: "core-grid" }, cores.map((value, i) => meter(value / 100, `core ${i}`, `${value.toFixed(0)} %`))),
          h("p", { class: "muted" }, `load average ${[sample.load_avg_1, sample.load_avg_5, sample.load_avg_15].map((v) => v.toFixed(2)).join(" / ")}`),
        ),
        h("section", { "aria-label": "Memory" }, h("h3", {}, "Memory"), memory),
        gpus.length
          ? h(
              "section",
              { "aria-label": "GPUs" },
              h("h3", {}, "GPUs"),
              gpus.map((gpu) =>
                h(
                  "div",
                  { class: "gpu" },
                  h("div", { class: "mono" }, `GPU ${gpu.id} · ${gpu.name}`),
                  meter((gpu.gpu_util_pct || 0) / 100, `GPU ${gpu.id} utilisation`, percent(gpu.gpu_util_pct)),
                  meter(gpu.mem_used_mb / gpu.mem_total_mb, `GPU ${gpu.id} memory`, `${bytes(gpu.mem_used_mb * MB)} of ${bytes(gpu.mem_total_mb * MB)}`),
                  h("div", { class: "muted" }, [gpu.temp_c != null ? `${gpu.temp_c} °C` : null, gpu.power_draw_w != null ? `${gpu.power_draw_w.toFixed(0)} W` : null].filter(Boolean).join(" · ")),
                ),
              ),
            )
          : h("section", { "aria-label": "GPUs" }, h("h3", {}, "GPUs"), h("p", { class: "muted" }, "No GPU reported.")),
      ),
      h("p", { class: "muted" }, `sampled ${new Date(sample.timestamp).toLocaleTimeString()}`),
    );
  }
}

export default {
  title: "Overview",
  mount(root, ctx) {
    const page = new OverviewPage(root, ctx);
    page.start();
    return () => page.stop();
  },
};
