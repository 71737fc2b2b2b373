// Minimal, safe formatting of model output: fenced code blocks become
// <pre><code>, `inline code` becomes <code>, the rest stays plain text
// (newlines kept by CSS). Everything is built with text nodes — model output
// never becomes markup, whatever it contains.

import { h } from "./dom.js";

const FENCE = /^\s*(```|~~~)\s*([\w+#.-]*)\s*$/;

/**
 * Split text into blocks: {kind: "text", text} and {kind: "code", lang, text}.
 * An unclosed fence (still streaming) is a code block up to the end.
 */
export function blocks(text) {
  const out = [];
  let buffer = [];
  let fence = null; // {marker, lang} while inside a code block
  const flush = (kind, extra = {}) => {
    if (buffer.length || kind === "code") out.push({ kind, text: buffer.join("\n"), ...extra });
    buffer = [];
  };
  for (const line of text.split("\n")) {
    const match = FENCE.exec(line);
    if (fence === null && match) {
      flush("text");
      fence = { marker: match[1], lang: match[2] };
    } else if (fence !== null && match && match[1] === fence.marker && !match[2]) {
      flush("code", { lang: fence.lang });
      fence = null;
    } else {
      buffer.push(line);
    }
  }
  if (fence !== null) flush("code", { lang: fence.lang, open: true });
  else flush("text");
  return out.filter((b) => b.kind === "code" || b.text !== "");
}

/** Text with `inline code` spans as nodes. */
function inline(text) {
  const parts = text.split(/(`[^`\n]+`)/);
  return parts.map((part, i) => (i % 2 === 1 ? h("code", {}, part.slice(1, -1)) : part));
}

/** A DocumentFragment showing `text` with code blocks and inline code. */
export function render(text) {
  const fragment = document.createDocumentFragment();
  for (const block of blocks(text)) {
    if (block.kind === "code") {
      fragment.append(
        h(
          "pre",
          { class: "code-block", "data-lang": block.lang || null },
          h("code", {}, block.text),
        ),
      );
    } else {
      fragment.append(h("div", { class: "md-text" }, inline(block.text)));
    }
  }
  return fragment;
}
