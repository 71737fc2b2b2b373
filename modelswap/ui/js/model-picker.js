// A labelled <select> of the models a Playground tab can call, from
// GET /v1/models (which already leaves unlisted models out): local models
// with their aliases as "↳ alias" entries, then selectors, profile pins and
// peers' models. It refreshes (debounced) when a model's status changes and
// keeps the selection; the last choice is remembered per tab.

import { h, replace } from "./dom.js";

const DEBOUNCE_MS = 200;
const GROUPS = [
  ["model", "Local"],
  ["selector", "Selectors"],
  ["profile", "Profile pins"],
  ["peer", "Peers"],
];

/** Group /v1/models records into [label, [{value, text}]] for the <select>. */
export function pickerGroups(records) {
  const byType = new Map(GROUPS.map(([type]) => [type, []]));
  const aliasesShown = new Set();
  for (const record of records) {
    const meta = record.meta?.llamaswap || {};
    const type = meta.type || "model";
    if (type === "alias") continue; // shown under its model
    const loaded = record.status?.value === "loaded";
    const name = record.name && record.name !== record.id ? ` — ${record.name}` : "";
    const options = byType.get(type) || byType.get("model");
    options.push({ value: record.id, text: `${record.id}${name}${loaded ? " (loaded)" : ""}` });
    for (const alias of meta.aliases || []) {
      if (!alias.trim() || aliasesShown.has(alias)) continue;
      aliasesShown.add(alias);
      options.push({ value: alias, text: `\u00a0\u00a0↳ ${alias}` });
    }
  }
  return GROUPS.map(([type, label]) => [label, byType.get(type)]).filter(([, o]) => o.length);
}

/**
 * modelPicker({api, events, signal, key, label}) → {element, select, get value()}.
 * `key` names the localStorage entry keeping the last choice.
 */
export function modelPicker({ api, events, signal, key, label = "Model" }) {
  const id = `model-${key}`;
  const storage = `modelswap.playground.model.${key}`;
  const select = h("select", { id, name: "model", "data-testid": `model-${key}` });
  const status = h("span", { class: "muted picker-status", role: "status" });
  const element = h("div", { class: "picker" }, h("label", { for: id }, label), select, status);
  let wanted = localStorage.getItem(storage) || "";
  let timer = null;
  let loading = null;

  select.addEventListener("change", () => {
    wanted = select.value;
    localStorage.setItem(storage, wanted);
  });

  async function load() {
    loading?.abort();
    const controller = new AbortController();
    loading = controller;
    const onAbort = () => controller.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      const list = await api.getJSON("/v1/models", { signal: controller.signal });
      const groups = pickerGroups(list.data || []);
      const current = select.value || wanted;
      replace(
        select,
        groups.map(([group, options]) =>
          h(
            "optgroup",
            { label: group },
            options.map((o) => h("option", { value: o.value, selected: o.value === current }, o.text)),
          ),
        ),
      );
      if (!groups.length) replace(select, h("option", { value: "" }, "no models configured"));
      status.textContent = "";
    } catch (error) {
      if (error?.name !== "AbortError") status.textContent = `model list failed: ${error.message}`;
    } finally {
      signal.removeEventListener("abort", onAbort);
      if (loading === controller) loading = null;
    }
  }

  const unsubscribe = events.on("modelStatus", () => {
    clearTimeout(timer);
    timer = setTimeout(load, DEBOUNCE_MS);
  });
  signal.addEventListener(
    "abort",
    () => {
      clearTimeout(timer);
      unsubscribe();
    },
    { once: true },
  );
  const ready = load();
  return {
    element,
    select,
    ready,
    get value() {
      return select.value;
    },
  };
}
