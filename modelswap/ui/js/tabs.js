// Keyboard-operable tabs (WAI-ARIA tabs pattern): the selected tab is the
// one Tab stop; Left/Right (and Home/End) move between tabs and select them.
// Panels are built on first selection (a tab nobody opens costs nothing).

import { h } from "./dom.js";

/**
 * tabs({id, tabs: [{key, label, build: () => Element}], selected, onSelect})
 * → {element, select(key)}
 */
export function tabs({ id, tabs: specs, selected, onSelect }) {
  const list = h("div", { class: "tabs", role: "tablist", "aria-label": id });
  const panels = h("div", { class: "tab-panels" });
  const entries = specs.map((spec) => {
    const tab = h(
      "button",
      {
        type: "button",
        role: "tab",
        id: `${id}-tab-${spec.key}`,
        "aria-controls": `${id}-panel-${spec.key}`,
        "aria-selected": "false",
        tabindex: "-1",
        "data-tab": spec.key,
        onclick: () => select(spec.key, { focus: true }),
      },
      spec.label,
    );
    const panel = h("div", {
      role: "tabpanel",
      id: `${id}-panel-${spec.key}`,
      "aria-labelledby": tab.id,
      "data-panel": spec.key,
      hidden: true,
    });
    list.append(tab);
    panels.append(panel);
    return { spec, tab, panel, built: false };
  });

  function select(key, { focus = false } = {}) {
    const chosen = entries.find((e) => e.spec.key === key) || entries[0];
    for (const entry of entries) {
      const on = entry === chosen;
      entry.tab.setAttribute("aria-selected", String(on));
      entry.tab.tabIndex = on ? 0 : -1;
      entry.panel.hidden = !on;
    }
    if (!chosen.built) {
      chosen.built = true;
      chosen.panel.append(chosen.spec.build());
    }
    if (focus) chosen.tab.focus();
    onSelect?.(chosen.spec.key);
  }

  list.addEventListener("keydown", (event) => {
    const index = entries.findIndex((e) => e.tab === document.activeElement);
    if (index < 0) return;
    const last = entries.length - 1;
    const next = {
      ArrowRight: index === last ? 0 : index + 1,
      ArrowLeft: index === 0 ? last : index - 1,
      Home: 0,
      End: last,
    }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    select(entries[next].spec.key, { focus: true });
  });

  select(selected);
  return { element: h("div", { class: "tabset" }, list, panels), select };
}
