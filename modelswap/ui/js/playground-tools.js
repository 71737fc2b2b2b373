// The Playground's non-chat tabs: Embeddings, Rerank, Images and Audio
// (speech and transcription). Each is a small form: a model picker, inputs,
// a Run button that turns into Cancel while busy (AbortController), the
// result, and any error inline.

import { h, replace } from "./dom.js";
import { modelPicker } from "./model-picker.js";
import { SESSION_HEADERS, isAbort, postForBlob, postForm } from "./playground-http.js";

/**
 * A form's shared machinery. `run(model, signal)` does the call and returns
 * nodes for the result area (or throws; the message is shown).
 */
function runner(ctx, { key, label, run }) {
  const picker = modelPicker({ ...ctx, key });
  const result = h("div", { class: "tool-result", "data-testid": `${key}-result`, "aria-live": "polite" });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const button = h("button", { type: "button", class: "primary", onclick: () => toggle() }, label);
  const busyText = h("span", { class: "muted", role: "status" });
  let controller = null;

  async function toggle() {
    if (controller) {
      controller.abort();
      return;
    }
    const model = picker.value;
    error.hidden = !!model;
    error.textContent = model ? "" : "Pick a model first.";
    if (!model) return;
    controller = new AbortController();
    const mine = controller;
    const onLeave = () => mine.abort();
    ctx.signal.addEventListener("abort", onLeave, { once: true });
    button.textContent = "Cancel";
    button.classList.remove("primary");
    busyText.textContent = "working…";
    try {
      replace(result, await run(model, mine.signal));
    } catch (failure) {
      if (!isAbort(failure)) {
        error.hidden = false;
        error.textContent = failure.message || String(failure);
      }
    } finally {
      ctx.signal.removeEventListener("abort", onLeave);
      controller = null;
      button.textContent = label;
      button.classList.add("primary");
      busyText.textContent = "";
    }
  }

  return { picker, element: (fields) => h("div", { class: "tool" }, picker.element, fields, h("div", { class: "row" }, button, busyText), error, result) };
}

function field(id, label, control) {
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

export function embeddingsTab(ctx) {
  const input = h("textarea", { rows: 3 }, "The quick brown fox jumps over the lazy dog.");
  const { element } = runner(ctx, {
    key: "embeddings",
    label: "Embed",
    async run(model, signal) {
      const answer = await ctx.api.send(
        "/v1/embeddings",
        { model, input: input.value },
        { signal, headers: SESSION_HEADERS },
      );
      const vectors = answer.data || [];
      return vectors.map((item) => {
        const vector = Array.isArray(item.embedding) ? item.embedding : [];
        const first = vector.slice(0, 8).map((v) => Number(v).toFixed(4));
        return h(
          "div",
          { class: "embedding" },
          h("p", {}, h("strong", { class: "dims" }, `${vector.length} dimensions`), answer.usage ? ` · ${answer.usage.prompt_tokens} prompt tokens` : ""),
          h("code", { class: "mono vector" }, `[${first.join(", ")}${vector.length > 8 ? ", …" : ""}]`),
        );
      });
    },
  });
  return element(field("embeddings-input", "Input text", input));
}

export function rerankTab(ctx) {
  const query = h("input", { type: "text", value: "what do foxes eat" });
  const documents = h(
    "textarea",
    { rows: 5 },
    "Foxes eat rodents, birds and berries.\nThe stock market closed higher today.\nWhat a fox eats depends on the season.",
  );
  const { element } = runner(ctx, {
    key: "rerank",
    label: "Rerank",
    async run(model, signal) {
      const docs = documents.value.split("\n").map((d) => d.trim()).filter(Boolean);
      const answer = await ctx.api.send(
        "/v1/rerank",
        { model, query: query.value, documents: docs },
        { signal, headers: SESSION_HEADERS },
      );
      const results = [...(answer.results || [])].sort((a, b) => b.relevance_score - a.relevance_score);
      return h(
        "table",
        { class: "rerank-results" },
        h("thead", {}, h("tr", {}, h("th", { class: "num" }, "Score"), h("th", {}, ""), h("th", {}, "Document"))),
        h(
          "tbody",
          {},
          results.map((r) => {
            const score = Number(r.relevance_score);
            const text = r.document?.text ?? docs[r.index] ?? `#${r.index}`;
            const width = Math.max(0, Math.min(1, score)) * 100;
            return h(
              "tr",
              {},
              h("td", { class: "num score" }, score.toFixed(4)),
              h("td", {}, h("div", { class: "progress" }, h("span", { style: `width:${width}%` }))),
              h("td", {}, text),
            );
          }),
        ),
      );
    },
  });
  return element([field("rerank-query", "Query", query), field("rerank-docs", "Documents (one per line)", documents)]);
}

const SIZES = ["256x256", "512x512", "1024x1024", "1024x768", "768x1024", "1792x1024", "1024x1792"];

export function imagesTab(ctx) {
  const prompt = h("textarea", { rows: 2 }, "A lighthouse on a cliff at dusk, oil painting");
  const size = h("select", {}, SIZES.map((s) => h("option", { value: s, selected: s === "512x512" }, s)));
  const { element } = runner(ctx, {
    key: "images",
    label: "Generate",
    async run(model, signal) {
      const answer = await ctx.api.send(
        "/v1/images/generations",
        { model, prompt: prompt.value, size: size.value, n: 1, response_format: "b64_json" },
        { signal, headers: SESSION_HEADERS },
      );
      const images = (answer.data || []).filter((d) => d.b64_json || d.url);
      if (!images.length) return h("p", { class: "muted" }, "The answer held no image.");
      return images.map((d, i) => {
        const src = d.b64_json ? `data:image/png;base64,${d.b64_json}` : d.url;
        return h(
          "figure",
          { class: "generated" },
          h("img", { src, alt: d.revised_prompt || prompt.value, "data-size": size.value }),
          h("figcaption", {}, h("a", { href: src, download: `image-${i + 1}.png` }, "Download")),
        );
      });
    },
  });
  return element([field("images-prompt", "Prompt", prompt), field("images-size", "Size", size)]);
}

export function audioTab(ctx) {
  const text = h("textarea", { rows: 2 }, "Hello! This is modelswap speaking.");
  const voice = h("input", { type: "text", value: "alloy" });
  let audioUrl = null;
  ctx.signal.addEventListener("abort", () => audioUrl && URL.revokeObjectURL(audioUrl));
  const speech = runner(ctx, {
    key: "speech",
    label: "Speak",
    async run(model, signal) {
      const blob = await postForBlob("/v1/audio/speech", { model, input: text.value, voice: voice.value }, { signal });
      if (audioUrl) URL.revokeObjectURL(audioUrl);
      audioUrl = URL.createObjectURL(blob);
      return h(
        "div",
        { class: "row" },
        h("audio", { controls: true, src: audioUrl }),
        h("a", { href: audioUrl, download: "speech.mp3" }, "Download"),
        h("span", { class: "muted" }, `${blob.type || "audio"} · ${blob.size} bytes`),
      );
    },
  });
  const file = h("input", { type: "file", accept: "audio/*,.mp3,.wav,.ogg,.flac,.m4a" });
  const transcription = runner(ctx, {
    key: "transcription",
    label: "Transcribe",
    async run(model, signal) {
      if (!file.files?.length) throw new Error("Choose an audio file first.");
      const form = new FormData();
      form.append("model", model);
      form.append("file", file.files[0]);
      const answer = await postForm("/v1/audio/transcriptions", form, { signal });
      const textOut = typeof answer === "string" ? answer : answer.text ?? JSON.stringify(answer);
      return h("blockquote", { class: "transcript" }, textOut);
    },
  });
  return h(
    "div",
    { class: "audio-tools" },
    h("section", {}, h("h2", {}, "Speech"), speech.element([field("speech-text", "Text", text), field("speech-voice", "Voice", voice)])),
    h("section", {}, h("h2", {}, "Transcription"), transcription.element(field("transcription-file", "Audio file", file))),
  );
}
