// Playground: try a model from the browser — streamed chat, embeddings,
// rerank, image generation and audio (speech, transcription). Each tab calls
// the same public routes a client would; every request carries this page
// load's X-Session-ID. The selected tab is remembered (`#/playground/<tab>`
// opens one directly).

import { h } from "../js/dom.js";
import { tabs } from "../js/tabs.js";
import { chatTab } from "../js/playground-chat.js";
import { audioTab, embeddingsTab, imagesTab, rerankTab } from "../js/playground-tools.js";
import { SESSION_ID } from "../js/playground-http.js";

const TAB_KEY = "modelswap.playground.tab";

export default {
  title: "Playground",
  mount(root, ctx) {
    const specs = [
      { key: "chat", label: "Chat", build: () => chatTab(ctx) },
      { key: "embeddings", label: "Embeddings", build: () => embeddingsTab(ctx) },
      { key: "rerank", label: "Rerank", build: () => rerankTab(ctx) },
      { key: "images", label: "Images", build: () => imagesTab(ctx) },
      { key: "audio", label: "Audio", build: () => audioTab(ctx) },
    ];
    const wanted = ctx.params[0] || localStorage.getItem(TAB_KEY) || "chat";
    const tabset = tabs({
      id: "playground",
      tabs: specs,
      selected: specs.some((s) => s.key === wanted) ? wanted : "chat",
      onSelect: (key) => localStorage.setItem(TAB_KEY, key),
    });
    root.append(
      h("div", { class: "card playground" }, tabset.element),
      h("p", { class: "muted session" }, `Requests from this page carry X-Session-ID: ${SESSION_ID}`),
    );
  },
};
