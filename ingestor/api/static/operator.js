// The operator page: polls /api/status every 2 s, the current shift's OEE every 15 s, and follows the
// downtime events over a WebSocket.  Every value reaches the DOM through textContent, never innerHTML.
// Optional endpoints (OEE, events) are used only when /api/openapi.json lists them, so a daemon without them
// shows "unavailable" instead of a failed request in the console.
"use strict";

const STATUS_EVERY_MS = 2000;
const OEE_EVERY_MS = 15000;
const OEE_PATH = "/api/manufacturing-metrics/oee/live";
const EVENTS_PATH = "/api/events";
const TOKEN_KEY = "ingestor.readToken";
const FEED_MAX = 50;

const $ = (id) => document.getElementById(id);
let previous = {};        // connector -> {count, at} of the last poll, for readings per second
let statusTimer = null;
let started = false;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, String(value));
    else if (key === "width") node.style.width = value;  // CSSOM, allowed by the page's CSP
    else node[key] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
  }
  return node;
}

function text(id, value) { $(id).textContent = value == null ? "–" : String(value); }

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class NeedsToken extends Error {}

async function api(path) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401 || response.status === 403) {
    askForToken(response.status === 403 ? "that token is not allowed" : (t ? "the token was refused" : ""));
    throw new NeedsToken();
  }
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function askForToken(problem) {
  if (token()) sessionStorage.removeItem(TOKEN_KEY);
  $("token-form").hidden = false;
  text("token-error", problem || "");
  setOverall("unavailable", "needs token");
}

function setOverall(state, label) {
  const badge = $("overall");
  badge.setAttribute("data-state", state);
  badge.textContent = label;
}

// --- formatting -------------------------------------------------------------------------------------------
function fmtNumber(value) {
  if (typeof value !== "number") return value == null ? "–" : String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en");
  return Math.abs(value) >= 100 ? value.toFixed(1) : value.toPrecision(4);
}
function fmtAge(seconds) {
  if (seconds == null || !isFinite(seconds)) return "–";
  if (seconds < 0) seconds = 0;
  if (seconds < 10) return seconds.toFixed(1) + " s";
  if (seconds < 120) return Math.round(seconds) + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}
function fmtBytes(bytes) {
  if (typeof bytes !== "number") return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i += 1; }
  return (i ? bytes.toFixed(1) : bytes) + " " + units[i];
}
function fmtTime(value) {
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return isNaN(date) ? String(value) : date.toLocaleTimeString("en-GB");
}
// the pipeline's Quality: 0 good, 1 uncertain, 2 bad
const QUALITY = { 0: "good", 1: "uncertain", 2: "bad" };
function quality(code) {
  const name = QUALITY[code];
  return name ? [name, name] : ["unknown", code == null ? "–" : String(code)];
}

// --- status -----------------------------------------------------------------------------------------------
function renderStatus(body) {
  const nowS = typeof body.now_us === "number" ? body.now_us / 1e6 : Date.now() / 1000;
  text("instance", body.instance_id || "");
  setOverall(body.ready ? "ready" : "unavailable", body.ready ? "ready" : "not ready");
  text("updated", "updated " + new Date().toLocaleTimeString("en-GB"));

  const db = body.database || {};
  const dbCell = $("db-connected");
  dbCell.textContent = db.connected ? "connected" : "disconnected";
  dbCell.setAttribute("data-state", db.connected ? "connected" : "disconnected");
  dbCell.className = "badge";
  text("db-error", db.last_error ? "last error: " + db.last_error : "");
  const queue = body.queue || {};
  text("queue-depth", queue.capacity != null ? fmtNumber(queue.readings) + " / " + fmtNumber(queue.capacity) : null);
  const spool = body.spool || {};
  text("spool-readings", spool.readings != null ? fmtNumber(spool.readings) : null);
  text("spool-size", spool.batches != null ? fmtNumber(spool.batches) + " / " + fmtBytes(spool.bytes) : null);
  text("oldest-unwritten", fmtAge(body.oldest_unwritten_age_s));
  text("watermark", db.watermark != null ? fmtNumber(db.watermark) : null);

  const rows = [];
  const seen = {};
  for (const [name, c] of Object.entries(body.connectors || {})) {
    let rate = "–";
    const count = c.readings_received;
    const last = previous[name];
    if (typeof count === "number") {
      if (last && nowS > last.at && count >= last.count) rate = ((count - last.count) / (nowS - last.at)).toFixed(1);
      seen[name] = { count, at: nowS };
    }
    rows.push(el("tr", { "data-connector": name },
      el("td", {}, name),
      el("td", {}, el("span", { class: "badge state", "data-state": c.state || "unknown" }, c.state || "unknown")),
      el("td", {}, c.since ? fmtAge(nowS - c.since) + " ago" : "–"),
      el("td", { class: "num rate" }, rate),
      el("td", { class: "num" }, fmtNumber(count)),
      el("td", { class: "error" }, c.last_error || "")));
  }
  previous = seen;
  $("connectors").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colSpan: 6, class: "muted" }, "no connectors"))]));

  const tags = (body.tags || []).slice().sort((a, b) =>
    (a.connector + "\u0000" + a.equipment + "\u0000" + a.parameter).localeCompare(
      b.connector + "\u0000" + b.equipment + "\u0000" + b.parameter));
  $("tags").replaceChildren(...tags.map((t) => {
    const [qState, qLabel] = quality(t.quality);
    return el("tr", { "data-tag": t.connector + "/" + t.equipment + "/" + t.parameter },
      el("td", {}, t.connector), el("td", {}, t.equipment), el("td", {}, t.parameter),
      el("td", { class: "num value" }, fmtNumber(t.value)), el("td", {}, t.unit || ""),
      el("td", { class: "num age" }, fmtAge(nowS - t.timestamp_us / 1e6)),
      el("td", {}, el("span", { class: "badge", "data-state": qState }, qLabel)));
  }));
}

// false when the API wants a token (polling stops until one is entered)
async function pollStatus() {
  try {
    renderStatus(await api("/api/status"));
  } catch (err) {
    if (err instanceof NeedsToken) { stopPolling(); return false; }
    setOverall("unavailable", "unreachable");
    text("updated", "last attempt " + new Date().toLocaleTimeString("en-GB") + " failed");
  }
  return true;
}
function stopPolling() { if (statusTimer !== null) { clearInterval(statusTimer); statusTimer = null; } }

// --- OEE --------------------------------------------------------------------------------------------------
function listOf(body) {
  if (Array.isArray(body)) return body;
  for (const key of ["items", "data", "equipment", "results"]) if (body && Array.isArray(body[key])) return body[key];
  return [];
}
function percent(value) {  // the API gives ratios 0..1
  if (typeof value !== "number") return null;
  return Math.max(0, Math.min(100, value * 100));
}
function bar(label, value) {
  const pct = percent(value);
  return el("div", { class: "bar-row" },
    el("span", {}, label),
    el("div", { class: "bar" }, el("span", { width: (pct == null ? 0 : pct) + "%" })),
    el("span", { class: "num" }, pct == null ? "–" : pct.toFixed(1) + " %"));
}
function renderOee(body) {
  const items = listOf(body);
  $("oee").replaceChildren(...items.map((item) => {
    const eq = item.equipment || {};
    const code = typeof eq === "string" ? eq : (eq.code || item.equipmentCode || item.equipment_code || "?");
    const name = typeof eq === "object" ? (eq.name || item.equipment_name || "") : "";
    const m = item.metrics || item;
    const oee = percent(m.oee);
    return el("div", { class: "machine", "data-equipment": code },
      el("div", { class: "machine-head" }, el("span", {}, code + (name ? " — " + name : "")),
        el("span", {}, "OEE " + (oee == null ? "–" : oee.toFixed(1) + " %"))),
      bar("availability", m.availability), bar("performance", m.performance), bar("quality", m.quality));
  }));
  text("oee-note", items.length ? "" : "no production recorded in this shift yet");
}
async function pollOee() {
  try { renderOee(await api(OEE_PATH)); }
  catch (err) { if (!(err instanceof NeedsToken)) text("oee-note", "OEE unavailable right now"); }
}

// --- downtime events --------------------------------------------------------------------------------------
let lastEventId = null;
let retryMs = 1000;

function addDowntime(envelope) {
  if (!envelope || envelope.type !== "downtime") return;
  if (envelope.id != null) lastEventId = envelope.id;
  const d = envelope.data || {};
  const reason = d.reason && typeof d.reason === "object" ? (d.reason.description || d.reason.code) : (d.reason || d.reasonCode || "");
  const phase = d.phase === "ended" && d.durationSeconds != null
    ? `ended after ${Math.round(d.durationSeconds)} s` : (d.phase || d.state || "stopped");
  const what = [phase, reason].filter(Boolean).join(" — ");
  const item = el("li", { "data-event-id": envelope.id == null ? "" : envelope.id },
    el("time", {}, fmtTime(envelope.timestamp)),
    el("strong", {}, envelope.equipmentCode || envelope.equipmentId || "?"), " ", what);
  const feed = $("downtime");
  feed.prepend(item);
  while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  text("events-note", "");
}
function connectEvents() {
  const url = new URL(EVENTS_PATH, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("types", "downtime");
  if (lastEventId != null) url.searchParams.set("since", String(lastEventId));
  const t = token();
  if (t) url.searchParams.set("access_token", t);
  let socket;
  try { socket = new WebSocket(url); } catch (err) { text("events-note", "live events unavailable"); return; }
  socket.onopen = () => { retryMs = 1000; if (!$("downtime").children.length) text("events-note", "no downtime since the page opened"); };
  socket.onmessage = (message) => {
    try { addDowntime(JSON.parse(message.data)); } catch (err) { /* not an envelope: ignored */ }
  };
  socket.onerror = () => { /* onclose follows and retries */ };
  socket.onclose = (close) => {
    if (close.code === 1008) { text("events-note", "live events refused: " + (close.reason || "bad request")); return; }
    if (close.code === 4410) lastEventId = null;  // since= no longer kept: start from what is kept now
    text("events-note", "live events reconnecting…");
    setTimeout(connectEvents, retryMs);
    retryMs = Math.min(retryMs * 2, 30000);
  };
}

// --- start ------------------------------------------------------------------------------------------------
async function optionalEndpoints() {
  try {
    const response = await fetch("/api/openapi.json", { cache: "no-store" });
    if (!response.ok) return new Set();
    return new Set(Object.keys((await response.json()).paths || {}));
  } catch (err) {
    return new Set();
  }
}

async function start() {
  $("token-form").hidden = true;
  stopPolling();
  if (!(await pollStatus())) return;
  statusTimer = setInterval(pollStatus, STATUS_EVERY_MS);
  if (started) return;  // after a new token: the optional parts are already running
  started = true;
  const paths = await optionalEndpoints();
  if (paths.has(OEE_PATH)) { pollOee(); setInterval(pollOee, OEE_EVERY_MS); }
  else text("oee-note", "OEE unavailable on this server");
  if (paths.has(EVENTS_PATH)) connectEvents();
  else text("events-note", "live events unavailable");
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    start();
  });
  start();
});
