// event-worker JavaScript client (served by the daemon at GET /api/events/client.js).
// Dependency-free ES module, no build step. See README "JavaScript client".
//
//   import { EventClient } from "https://events.example.com/api/events/client.js";
//   const client = new EventClient({ url: "https://events.example.com", token: () => myToken(),
//                                    cookieName: "ew_token" });
//   client.subscribe(["user:42"], { onMessage, onReset, onResume });
//   client.publish({ type: "booking.created", data: { user: "42" } }); // queued while offline
//
// Subscriptions remember their last position in localStorage (one key per channel set) and
// resume from it; a resume that cannot be exact calls onReset(reason): reload the state.
// Publishes go to a queue persisted in localStorage with client-generated ids and are sent
// through POST /api/events/publish/batch; `published` and `duplicate` leave the queue,
// `failed` (and network errors) stay queued, `invalid` and `forbidden` leave it and are
// reported to onRejected.

const PREFIX = "event-worker:";
const BATCH = 100;
const MIN_RETRY_MS = 1000;
const MAX_RETRY_MS = 30000;

/** A new event id: crypto.randomUUID() where available (secure contexts). */
function newId() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function load(storage, key, fallback) {
  try {
    const text = storage.getItem(key);
    return text === null ? fallback : JSON.parse(text);
  } catch (_) {
    return fallback;
  }
}

function channelQuery(channels) {
  return channels.map((c) => "channel=" + encodeURIComponent(c)).join("&");
}

/** The client of one event-worker daemon. */
export class EventClient {
  /**
   * @param {object} o
   * @param {string} o.url  the daemon's base URL (e.g. "https://events.example.com")
   * @param {() => (string|null|Promise<string|null>)} [o.token]  the app token, asked before
   *   every request (sent as `Authorization: Bearer` on fetch)
   * @param {string} [o.cookieName]  with a token: written as this cookie before EventSource and
   *   WebSocket connections (they cannot send headers); needs the page and the daemon on the
   *   same site. Without it the cookie is left to the app (e.g. set by its server).
   * @param {(event: object, result: object) => void} [o.onRejected]  a queued event refused
   *   for good (`invalid` or `forbidden`); it left the queue
   * @param {(error: string) => void} [o.onError]  a request failed (it is retried)
   * @param {Storage} [o.storage]  default localStorage
   */
  constructor(o) {
    this.url = String(o.url).replace(/\/+$/, "");
    this.token = o.token || (() => null);
    this.cookieName = o.cookieName || null;
    this.onRejected = o.onRejected || (() => {});
    this.onError = o.onError || (() => {});
    this.storage = o.storage || globalThis.localStorage;
    this.queueKey = PREFIX + "queue:" + this.url;
    this.flushing = null;
    this.retryMs = MIN_RETRY_MS;
    this.timer = null;
    this.subs = new Set();
    if (globalThis.addEventListener) globalThis.addEventListener("online", () => this.flush());
    if (this.pending().length) this.flush();
  }

  async headers(json) {
    const h = {};
    if (json) h["content-type"] = "application/json";
    const t = await this.token();
    if (t) h.authorization = "Bearer " + t;
    return h;
  }

  async setCookie() {
    if (!this.cookieName || !globalThis.document) return;
    const t = await this.token();
    if (t) document.cookie = `${this.cookieName}=${t}; path=/; SameSite=Strict`;
  }

  /**
   * The current position of `channels` (GET /api/events/stream/position). Page load: read it,
   * load the state, then subscribe with `{ since: result.id }`: no gap between the two.
   * @returns {Promise<{positions: object, id: string}>}
   */
  async position(channels) {
    const r = await fetch(`${this.url}/api/events/stream/position?${channelQuery(channels)}`, {
      headers: await this.headers(false),
      credentials: "include",
    });
    if (!r.ok) throw new Error(`position: ${r.status} ${await r.text()}`);
    return r.json();
  }

  /**
   * Subscribes to `channels` (at most 16). Handlers: onMessage({channel, position, event}),
   * onResume(reply) after every (re)connection, onReset(reason, reply) when the resume was not
   * exact (reload the state), onEnd(reason) when the server cut the connection (it reconnects).
   * Options: since (a position id; default the stored one), transport "sse" (default) or "ws".
   * @returns {{close: () => void, id: () => (string|null)}}
   */
  subscribe(channels, h = {}) {
    const sub = new Subscription(this, [...channels], h);
    this.subs.add(sub);
    sub.open();
    return sub;
  }

  /** The queued events (oldest first), as they will be sent. */
  pending() {
    return load(this.storage, this.queueKey, []);
  }

  savePending(queue) {
    this.storage.setItem(this.queueKey, JSON.stringify(queue));
  }

  /**
   * Queues `event` ({type, data, ...CloudEvents attributes}); an `id` is generated unless
   * given. The queue is persisted first, then flushed. Returns the id.
   */
  publish(event) {
    const e = { ...event, id: event.id || newId() };
    this.savePending([...this.pending(), e]);
    this.flush();
    return e.id;
  }

  /** Sends the queue now (one flush at a time); resolves when this attempt is done. */
  flush() {
    if (!this.flushing) {
      this.flushing = this.sendQueue().finally(() => {
        this.flushing = null;
      });
    }
    return this.flushing;
  }

  async sendQueue() {
    clearTimeout(this.timer);
    this.timer = null;
    let queue = this.pending();
    while (queue.length) {
      const batch = queue.slice(0, BATCH);
      let results;
      try {
        const r = await fetch(`${this.url}/api/events/publish/batch`, {
          method: "POST",
          headers: await this.headers(true),
          credentials: "include",
          body: JSON.stringify({ events: batch }),
        });
        const body = await r.json().catch(() => ({}));
        if (!Array.isArray(body.results)) {
          throw new Error(`publish/batch: ${r.status} ${body.error || ""}`.trim());
        }
        results = body.results;
      } catch (err) {
        this.onError(String(err && err.message ? err.message : err));
        this.retryLater();
        return;
      }
      const done = new Set();
      let failed = false;
      batch.forEach((event, i) => {
        const res = results[i] || { status: "failed" };
        if (res.status === "published" || res.status === "duplicate") done.add(event.id);
        else if (res.status === "invalid" || res.status === "forbidden") {
          done.add(event.id);
          this.onRejected(event, res);
        } else failed = true;
      });
      // Re-read: publish() may have queued more while the request was in flight.
      queue = this.pending().filter((e) => !done.has(e.id));
      this.savePending(queue);
      if (failed) {
        this.retryLater();
        return;
      }
    }
    this.retryMs = MIN_RETRY_MS;
  }

  retryLater() {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
  }

  /** Closes every subscription and stops retrying (the queue stays persisted). */
  close() {
    for (const s of this.subs) s.close();
    clearTimeout(this.timer);
    this.timer = null;
  }
}

/** One subscription: a connection that reconnects from the stored position. */
class Subscription {
  constructor(client, channels, h) {
    this.client = client;
    this.channels = channels;
    this.h = h;
    this.key = PREFIX + "position:" + client.url + ":" + [...channels].sort().join("\n");
    if (h.since) client.storage.setItem(this.key, h.since);
    this.conn = null;
    this.closed = false;
    this.retryMs = MIN_RETRY_MS;
    this.timer = null;
  }

  /** The stored position (the `id` of the last message or resume). */
  id() {
    return this.client.storage.getItem(this.key);
  }

  keep(id) {
    if (id) this.client.storage.setItem(this.key, id);
  }

  async open() {
    if (this.closed) return;
    await this.client.setCookie();
    if (this.closed) return;
    if (this.h.transport === "ws") this.openWs();
    else this.openSse();
  }

  reconnect() {
    if (this.conn) this.conn.close();
    this.conn = null;
    if (this.closed || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.open();
    }, this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
  }

  resumed(reply, id) {
    this.retryMs = MIN_RETRY_MS;
    this.keep(id);
    if (this.h.onResume) this.h.onResume(reply);
    if (reply.recovered === false && this.h.onReset) this.h.onReset(reply.reason, reply);
    this.client.flush();
  }

  message(m, id) {
    this.keep(id);
    if (this.h.onMessage) this.h.onMessage(m);
  }

  ended(reason, id) {
    this.keep(id);
    if (this.h.onEnd) this.h.onEnd(reason);
    this.reconnect();
  }

  openSse() {
    const since = this.id();
    let url = `${this.client.url}/api/events/stream?${channelQuery(this.channels)}`;
    if (since) url += "&since=" + encodeURIComponent(since);
    const es = new EventSource(url, { withCredentials: true });
    this.conn = es;
    es.addEventListener("resume", (e) => this.resumed(JSON.parse(e.data), e.lastEventId));
    es.addEventListener("message", (e) => this.message(JSON.parse(e.data), e.lastEventId));
    es.addEventListener("end", (e) => {
      const d = JSON.parse(e.data);
      this.ended(d.reason, d.id);
    });
    // The browser's own retry keeps Last-Event-ID; our reconnect uses the stored position.
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED || es.readyState === EventSource.CONNECTING) {
        this.client.onError("subscription: connection lost; reconnecting");
        this.reconnect();
      }
    };
  }

  openWs() {
    const ws = new WebSocket(this.client.url.replace(/^http/, "ws") + "/api/events/ws");
    this.conn = ws;
    ws.onopen = () => {
      const sub = { type: "subscribe", channels: this.channels };
      const since = this.id();
      if (since) sub.since = since;
      ws.send(JSON.stringify(sub));
    };
    ws.onmessage = (e) => {
      const f = JSON.parse(e.data);
      if (f.type === "resume") this.resumed(f, f.id);
      else if (f.type === "message") this.message(f, f.id);
      else if (f.type === "end") this.ended(f.reason, f.id);
      else if (f.type === "error") this.client.onError("subscription: " + f.error);
    };
    ws.onclose = () => {
      if (this.conn === ws) this.reconnect();
    };
  }

  /** Stops the subscription (the stored position stays). */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.conn) this.conn.close();
    this.conn = null;
    this.client.subs.delete(this);
  }
}
