"use strict";
// The dashboard page: polls /api/snapshot, draws the tables and two SVG charts, and acts on
// dead letters with the token (from the link's #token=..., kept for this tab only).
// Task data (payloads, errors) is untrusted: it is only ever set as text, never as HTML.

const POLL_MS = 1000;
const LETTERS_EVERY = 5;        // polls between two readings of the dead letters
const MAX_POINTS = 600;         // chart points kept (one per poll)
const COLORS = ["#0969da", "#1a7f37", "#bf8700", "#cf222e", "#8250df", "#1b7c83",
                "#bc4c00", "#6e7781"];

let token = null;
let points = [];
let polls = 0;
let lastSnapshot = null;
let pickedQueue = false;        // the user chose the dead letters' queue
const opened = new Set();       // failures whose traceback the user opened (kept open)
let shownFailures = null;       // the ids of the failures on the page
const colorOf = new Map();

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key === "style") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

function readToken() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem("queueing-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  token = sessionStorage.getItem("queueing-token");
  $("token-form").hidden = Boolean(token);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    if (response.status === 401 || response.status === 403) $("token-form").hidden = false;
    throw new Error((body && body.error) || response.status + " " + response.statusText);
  }
  return body;
}

function rate(x) { return x === null || x === undefined ? "-" : x < 10 ? x.toFixed(2) : x.toFixed(0); }

function seconds(x) {
  if (x === null || x === undefined) return "-";
  if (x < 1) return (x * 1000).toFixed(x < 0.01 ? 1 : 0) + " ms";
  if (x < 60) return x.toFixed(1) + " s";
  return (x / 60).toFixed(1) + " min";
}

function clock(ts) { return ts ? new Date(ts * 1000).toLocaleTimeString() : "-"; }
function ago(ts) { return ts ? Math.max(0, Date.now() / 1000 - ts).toFixed(0) + " s ago" : "-"; }
function short(value, chars = 80) {
  const text = JSON.stringify(value);
  return text === undefined ? "" : text.length <= chars ? text : text.slice(0, chars - 1) + "…";
}

function color(queue) {
  if (!colorOf.has(queue)) colorOf.set(queue, COLORS[colorOf.size % COLORS.length]);
  return colorOf.get(queue);
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function renderQueues(snapshot) {
  const rows = snapshot.queues.map(q => {
    const slots = q.workers === null ? "-" : `${q.busy} / ${q.workers}`;
    const failed = q.failed + q.dead_lettered;
    return el("tr", { "data-queue": q.name },
      el("td", {}, el("span", { class: "swatch", style: `background:${color(q.name)}` }), q.name),
      el("td", { class: "depth" }, q.depth),
      el("td", {}, q.scheduled),
      el("td", { class: "in-flight" }, q.in_flight),
      el("td", { class: "rate-in" }, rate(q.rate_in)),
      el("td", { class: "rate-out" }, rate(q.rate_out)),
      el("td", {}, seconds(q.p50)),
      el("td", {}, seconds(q.p99)),
      el("td", {}, q.succeeded),
      el("td", { class: failed ? "failed bad" : "failed" }, failed),
      el("td", {}, q.retried),
      el("td", { class: q.dead_letters ? "dead-letters bad" : "dead-letters" }, q.dead_letters),
      el("td", {}, slots));
  });
  fill($("queues").tBodies[0], rows);
  $("no-queues").hidden = snapshot.queues.length > 0;
}

function renderWorkers(snapshot) {
  const rows = snapshot.processes.map(p => {
    const per = Object.entries(p.slots).map(([q, [n, busy]]) => `${q} ${busy}/${n}`);
    return el("tr", { "data-process": p.name },
      el("td", {}, p.name),
      el("td", {}, p.host || "-"),
      el("td", {}, p.pid || "-"),
      el("td", { class: "text" }, per.length ? per.join(", ") : p.queues.join(", ")),
      el("td", {}, p.workers === null ? `${p.busy ?? "-"} / -` : `${p.busy} / ${p.workers}`),
      el("td", {}, ago(p.seen_at)));
  });
  fill($("workers").tBodies[0], rows);
  $("no-workers").hidden = snapshot.processes.length > 0;
}

function renderSchedules(snapshot) {
  $("schedules-section").hidden = snapshot.schedules.length === 0;
  fill($("schedules").tBodies[0], snapshot.schedules.map(s => el("tr", {},
    el("td", {}, s.name), el("td", {}, s.queue),
    el("td", {}, s.cron ? `cron ${s.cron} (${s.timezone})` : `every ${s.every} s`),
    el("td", {}, clock(s.next_at)),
    el("td", {}, clock(s.last_at)),
    el("td", {}, s.last_outcome || "none found"))));
}

function renderFailures(snapshot) {
  // Drawn again only when the list changed (a reader may be selecting a traceback).
  const ids = snapshot.failures.map(f => f.id).join("\n");
  if (ids === shownFailures && $("failures").childElementCount) return;
  shownFailures = ids;
  const items = snapshot.failures.map(f => {
    const head = el("summary", {},
      el("span", { class: "error" }, f.error_type || f.state), ": ", f.message,
      el("span", { class: "muted" }, `  ${f.queue} · ${f.id} · ${f.attempts} attempt(s) · ${clock(f.failed_at)}`));
    const details = el("details", { open: opened.has(f.id) }, head,
      el("div", {}, "payload: ", el("code", {}, short(f.payload, 200))),
      el("pre", { class: "traceback" }, f.traceback || "(no traceback)"));
    details.addEventListener("toggle", () => {
      if (details.open) opened.add(f.id); else opened.delete(f.id);
    });
    return el("div", { class: "failure", "data-id": f.id }, details);
  });
  $("failures").replaceChildren(...items);
  $("no-failures").hidden = items.length > 0;
}

function renderSelect(snapshot) {
  // Until the user picks a queue, show one that has dead letters.
  const select = $("dl-queue");
  const chosen = select.value;
  const names = snapshot.queues.map(q => q.name);
  const changed = names.join("\n") !== [...select.options].map(o => o.value).join("\n");
  if (changed) {
    select.replaceChildren(...snapshot.queues.map(q => el("option", { value: q.name }, q.name)));
  }
  const current = snapshot.queues.find(q => q.name === chosen);
  const withLetters = snapshot.queues.find(q => q.dead_letters > 0);
  let wanted = current && (pickedQueue || current.dead_letters > 0) ? chosen : null;
  wanted = wanted || (withLetters ? withLetters.name : names[0] || "");
  if (changed || wanted !== chosen) {
    select.value = wanted;
    loadLetters();
  }
}

function chart(id, legendId, series, format) {
  const box = $(id);
  const width = 600, height = 200, left = 48, bottom = 18, top = 8;
  box.replaceChildren();
  const all = series.flatMap(s => s.values.filter(v => v !== null));
  const max = Math.max(1e-9, ...all) * 1.1;
  for (let i = 0; i <= 4; i++) {
    const y = top + (height - top - bottom) * i / 4;
    box.append(svg("line", { x1: left, x2: width, y1: y, y2: y, class: "grid" }));
    const label = svg("text", { x: 2, y: y + 4 });
    label.textContent = format(max * (1 - i / 4));
    box.append(label);
  }
  const count = Math.max(2, ...series.map(s => s.values.length));
  if (points.length > 1) {
    for (const [at, anchor, where] of [[points[0].at, "start", left], [points[points.length - 1].at, "end", width]]) {
      const label = svg("text", { x: where, y: height - 4, "text-anchor": anchor });
      label.textContent = clock(at);
      box.append(label);
    }
  }
  const x = i => left + (width - left) * i / (count - 1);
  const y = v => top + (height - top - bottom) * (1 - v / max);
  for (const s of series) {
    let d = "";
    s.values.forEach((v, i) => {
      if (v === null) return;
      d += (d && s.values[i - 1] !== null ? "L" : "M") + x(i + count - s.values.length).toFixed(1) + "," + y(v).toFixed(1);
    });
    if (d) box.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": 1.6,
      "stroke-dasharray": s.dashed ? "4 3" : "none", "vector-effect": "non-scaling-stroke" }));
  }
  const legend = $(legendId);
  const seen = [...new Set(series.map(s => s.queue))];
  legend.replaceChildren(...seen.map(q => {
    return el("span", {}, el("span", { class: "swatch", style: `background:${color(q)}` }), q);
  }));
}

function renderCharts() {
  const names = lastSnapshot ? lastSnapshot.queues.map(q => q.name) : [];
  const series = (index, dashed) => names.map(q => ({
    queue: q, color: color(q), dashed,
    values: points.map(p => (p.queues[q] ? p.queues[q][index] : null)),
  }));
  chart("chart-rate", "legend-rate", series(1, false), rate);
  chart("chart-latency", "legend-latency", [...series(2, false), ...series(3, true)], seconds);
}

function render(snapshot) {
  lastSnapshot = snapshot;
  $("source").textContent = snapshot.source;
  $("updated").textContent = "updated " + clock(snapshot.taken_at);
  $("window").textContent = snapshot.window ? `rates and latencies over the last ${snapshot.window.toFixed(0)} s` : "";
  $("problem").hidden = !snapshot.problem;
  $("problem").textContent = snapshot.problem || "";
  renderQueues(snapshot);
  renderWorkers(snapshot);
  renderSchedules(snapshot);
  renderFailures(snapshot);
  renderSelect(snapshot);
  renderCharts();
}

function say(text, ok) {
  const box = $("dl-message");
  box.textContent = text;
  box.className = ok ? "ok" : "bad";
}

async function loadLetters() {
  const queue = $("dl-queue").value;
  if (!queue) { fill($("dead-letters").tBodies[0], []); return; }
  let letters;
  try {
    letters = await api(`/api/queues/${encodeURIComponent(queue)}/dead-letters?limit=50`);
  } catch (e) { say(e.message, false); return; }
  const rows = letters.slice().reverse().map(l => {
    const button = el("button", { type: "button", class: "requeue" }, "Requeue");
    button.addEventListener("click", () => requeue(queue, [l.id]));
    const error = l.error ? `${l.error.type}: ${l.error.message}` : "-";
    return el("tr", { "data-letter-id": l.id },
      el("td", {}, l.id || "(not a task)"), el("td", {}, l.state), el("td", {}, l.attempts),
      el("td", {}, clock(l.failed_at)), el("td", { class: "text" }, error),
      el("td", { class: "text" }, el("code", {}, short(l.payload))),
      el("td", {}, l.id ? button : ""));
  });
  fill($("dead-letters").tBodies[0], rows);
  $("no-letters").hidden = rows.length > 0;
}

async function requeue(queue, ids) {
  try {
    const body = JSON.stringify(ids ? { ids } : {});
    const answer = await api(`/api/queues/${encodeURIComponent(queue)}/dead-letters/requeue`,
      { method: "POST", headers: { "Content-Type": "application/json" }, body });
    say(`requeued ${answer.requeued.length} task(s): ${answer.requeued.join(", ")}`, true);
  } catch (e) { say("requeue refused: " + e.message, false); }
  await refresh();
  await loadLetters();
}

async function purge(queue) {
  if (!confirm(`Delete every dead letter of ${queue}?`)) return;
  try {
    const answer = await api(`/api/queues/${encodeURIComponent(queue)}/dead-letters/purge`,
      { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
    say(`purged ${answer.purged} dead letter(s)`, true);
  } catch (e) { say("purge refused: " + e.message, false); }
  await refresh();
  await loadLetters();
}

async function lookup(event) {
  event.preventDefault();
  const id = $("task-id").value.trim();
  const box = $("task");
  if (!id) return;
  try {
    const task = await api(`/api/tasks/${encodeURIComponent(id)}`);
    const rows = [["task", task.id], ["queue", task.queue], ["state", task.state],
      ["attempts", task.attempts], ["deliveries", task.deliveries],
      ["submitted", clock(task.submitted_at)], ["finished", clock(task.finished_at)]];
    if (task.stage) rows.push(["stage", task.stage]);
    if ("result" in task) rows.push(["result", short(task.result, 400)]);
    if (task.error) rows.push(["error", `${task.error.type}: ${task.error.message}`]);
    const list = el("dl", { class: "task" });
    for (const [label, value] of rows) list.append(el("dt", {}, label), el("dd", {}, value));
    box.replaceChildren(list);
    if (task.error && task.error.traceback) box.append(el("pre", {}, task.error.traceback));
  } catch (e) {
    box.replaceChildren(el("p", { class: "bad" }, e.message));
  }
}

async function refresh() {
  try {
    const snapshot = await api("/api/snapshot");
    points.push({ at: snapshot.taken_at, queues: Object.fromEntries(snapshot.queues.map(
      q => [q.name, [q.rate_in, q.rate_out, q.p50, q.p99]])) });
    if (points.length > MAX_POINTS) points = points.slice(-MAX_POINTS);
    render(snapshot);
  } catch (e) {
    $("problem").hidden = false;
    $("problem").textContent = "the dashboard does not answer: " + e.message;
  }
}

async function poll() {
  await refresh();
  if (++polls % LETTERS_EVERY === 0) await loadLetters();
  setTimeout(poll, POLL_MS);
}

async function start() {
  readToken();
  $("token-form").addEventListener("submit", event => {
    event.preventDefault();
    token = $("token-input").value.trim() || null;
    if (token) sessionStorage.setItem("queueing-token", token);
    $("token-form").hidden = Boolean(token);
  });
  $("dl-queue").addEventListener("change", () => { pickedQueue = true; loadLetters(); });
  $("dl-requeue-all").addEventListener("click", () => requeue($("dl-queue").value, null));
  $("dl-purge").addEventListener("click", () => purge($("dl-queue").value));
  $("lookup").addEventListener("submit", lookup);
  try { points = (await api("/api/history")).slice(-MAX_POINTS); } catch (e) { points = []; }
  points.pop();  // the latest comes again with the first snapshot
  await poll();
}

start();
