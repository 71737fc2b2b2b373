// One /api/events connection for the whole UI, and the live state it carries.
//
// Pages never open their own event stream: they read `events.state` and
// subscribe with `events.on(type, fn)` (which returns an unsubscribe function;
// a page calls it from its cleanup). Types: the server's (`modelStatus`,
// `logData`, `inflight`, `activity`, `metrics`, `profileChanged`, `uiConfig`,
// `loadProgress`) plus `connection` (the state changed) and `logs` (the
// proxy/upstream log text changed).

const LOG_LIMIT = 100 * 1024; // characters of log text kept per source, as llama-swap
const BACKOFF = [1000, 2000, 4000, 5000]; // reconnect delays (ms), capped at 5 s

export class Events {
  // `metrics=0`: the UI reads rows from /api/metrics/activity on `activity`
  // events; the full-row `metrics` events (for older llama-swap UIs) would only
  // make the server build every row at once for nothing.
  constructor(url = "/api/events?metrics=0") {
    this.url = url;
    this.state = {
      connection: "connecting", // connecting | connected | disconnected
      models: [], // modelStatus payload: [{id, name, description, state, unlisted, peerID, …}]
      inflight: new Map(), // id → in-flight entry
      loading: new Map(), // model → latest loadProgress payload (while loading)
      logs: { proxy: "", upstream: "" },
      profile: null,
      uiConfig: {},
    };
    this.listeners = new Map();
    this.source = null;
    this.attempt = 0;
    this.timer = null;
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type)?.delete(fn);
  }

  emit(type, data) {
    for (const fn of this.listeners.get(type) || []) {
      try {
        fn(data, this.state);
      } catch (error) {
        console.error(`events listener for ${type} failed`, error);
      }
    }
  }

  /** A model's latest status entry, or undefined. */
  model(id) {
    return this.state.models.find((m) => m.id === id);
  }

  connect() {
    if (this.source) return;
    this.setConnection("connecting");
    const source = new EventSource(this.url);
    this.source = source;
    source.onopen = () => {
      this.attempt = 0;
      // The server's burst refills everything: start from empty.
      this.state.logs = { proxy: "", upstream: "" };
      this.state.inflight = new Map();
      this.state.loading = new Map();
      this.setConnection("connected");
    };
    source.onmessage = (message) => this.receive(message.data);
    source.onerror = () => {
      source.close();
      this.source = null;
      this.setConnection("disconnected");
      const delay = BACKOFF[Math.min(this.attempt, BACKOFF.length - 1)];
      this.attempt++;
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  close() {
    clearTimeout(this.timer);
    this.source?.close();
    this.source = null;
  }

  setConnection(value) {
    this.state.connection = value;
    this.emit("connection", value);
  }

  receive(raw) {
    let envelope;
    let data;
    try {
      envelope = JSON.parse(raw);
      data = JSON.parse(envelope.data); // the payload is double-encoded, as llama-swap's
    } catch (error) {
      console.warn("unreadable event", error);
      return;
    }
    const type = envelope.type;
    const state = this.state;
    switch (type) {
      case "modelStatus":
        state.models = data;
        break;
      case "logData": {
        const source = data.source === "upstream" ? "upstream" : "proxy";
        const text = state.logs[source] + data.data;
        state.logs[source] = text.length > LOG_LIMIT ? text.slice(-LOG_LIMIT) : text;
        this.emit("logs", { source, chunk: data.data });
        break;
      }
      case "inflight":
        if (data.operation === "snapshot") {
          state.inflight = new Map((data.requests || []).map((r) => [r.id, r]));
        } else if (data.operation === "upsert") {
          state.inflight.set(data.request.id, data.request);
        } else if (data.operation === "remove") {
          state.inflight.delete(data.id);
        }
        break;
      case "loadProgress":
        if (["ready", "failed", "cancelled"].includes(data.phase)) state.loading.delete(data.model);
        else state.loading.set(data.model, { ...data, receivedAt: performance.now() });
        break;
      case "profileChanged":
        state.profile = data.active;
        break;
      case "uiConfig":
        state.uiConfig = data;
        break;
      default:
        break;
    }
    this.emit(type, data);
  }
}
