// Placeholder until this page is written.
import { h } from "../js/dom.js";

export default {
  title: "Activity",
  mount(root) {
    root.append(h("p", { class: "muted" }, "This page is being built."));
  },
};
