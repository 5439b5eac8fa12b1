// pibake watch's fleet page. Every string from the server is put into the
// page as text (textContent, dataset, title), never as markup: the
// server has escaped what nodes sent, and this keeps it inert anyway.
"use strict";

const slugs = {
  "not heard from": "silent", "activating": "activating", "first boot": "firstboot",
  "k3s installing": "k3sinstall", "k3s active": "k3sactive", "registered": "registered",
  "problem": "problem", "stopped for good": "stopped", "older build": "older",
};
const slug = (phase) => slugs[phase] || "other";
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

const nodes = new Map(); // name → {view, tile}
let phases = [];
let counts = {};
let offset = 0; // server clock minus this browser's, in ms
let selected = "";
let phaseFilter = "";

// ago says how long ago t (RFC 3339, server clock) was, as the table does.
function ago(t) {
  if (!t) return "-";
  let s = Math.max(0, Math.floor((Date.now() + offset - Date.parse(t)) / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  s %= 60;
  return (h ? h + "h" + m + "m" : m ? m + "m" : "") + s + "s ago";
}

function clock(t) {
  const d = new Date(t);
  return isNaN(d) ? "" : d.toLocaleTimeString([], { hour12: false });
}

function makeTile(name) {
  const tile = el("button", "tile");
  tile.type = "button";
  tile.dataset.node = name;
  tile.append(el("span", "name"), el("span", "phase"), el("span", "stage"), el("span", "since"));
  tile.addEventListener("click", () => select(name));
  return tile;
}

function renderTile(entry) {
  const v = entry.view, t = entry.tile;
  t.dataset.phase = slug(v.phase);
  t.children[0].textContent = v.node;
  t.children[1].textContent = v.phase;
  t.children[2].textContent = v.stage === "-" ? v.role : v.stage + (v.state !== v.stage ? " " + v.state : "");
  t.children[3].textContent = ago(v.since);
  t.title = v.node + ": " + v.phase + (v.detail ? "\n" + v.detail : "");
  t.setAttribute("aria-current", String(v.node === selected));
  t.hidden = !matches(v);
}

function matches(v) {
  if (phaseFilter && v.phase !== phaseFilter) return false;
  const q = $("filter").value.trim().toLowerCase();
  if (!q) return true;
  return [v.node, v.role, v.phase, v.stage, v.state, v.detail].some((s) => (s || "").toLowerCase().includes(q));
}

function renderCounts() {
  const bar = $("counts");
  bar.replaceChildren();
  for (const p of phases) {
    const n = counts[p] || 0;
    if (!n && !slugs[p]) continue; // phases an awaited node never has
    const b = el("button", "count");
    b.type = "button";
    b.dataset.phase = slug(p);
    b.dataset.n = String(n);
    b.setAttribute("aria-pressed", String(p === phaseFilter));
    b.append(el("span", "dot"), el("span", "label", p + " "), el("b", "", String(n)));
    b.addEventListener("click", () => {
      phaseFilter = phaseFilter === p ? "" : p;
      renderCounts();
      refilter();
    });
    bar.append(b);
  }
}

function refilter() {
  for (const e of nodes.values()) e.tile.hidden = !matches(e.view);
}

function select(name) {
  selected = name;
  for (const e of nodes.values()) e.tile.setAttribute("aria-current", String(e.view.node === name));
  renderDetail();
}

function renderDetail() {
  const e = nodes.get(selected);
  $("detail").hidden = !e;
  if (!e) return;
  const v = e.view;
  $("d-node").textContent = v.node;
  $("d-phase").textContent = v.phase;
  $("d-role").textContent = v.role;
  $("d-batch").textContent = v.batch;
  $("d-stage").textContent = v.stage;
  $("d-state").textContent = v.state;
  $("d-since").textContent = ago(v.since);
  $("d-detail").textContent = v.detail || "";
  $("d-booted").textContent = v.booted || "";
  $("d-bootloader").textContent = v.bootloader || "";
  const list = $("d-timeline");
  list.replaceChildren();
  for (const s of v.timeline || []) {
    const li = el("li", s.older ? "older" : "");
    const time = el("time", "", clock(s.received));
    time.dateTime = s.received;
    li.append(time, el("span", "", s.stage + " " + s.state + (s.reason ? ": " + s.reason : "") + (s.older ? " (older build)" : "")));
    list.append(li);
  }
}

function setNode(v) {
  let e = nodes.get(v.node);
  if (!e) {
    e = { view: v, tile: makeTile(v.node) };
    nodes.set(v.node, e);
    $("grid").append(e.tile);
  }
  e.view = v;
  renderTile(e);
  if (v.node === selected) renderDetail();
}

function snapshot(s) {
  offset = Date.parse(s.now) - Date.now();
  $("title").textContent = s.title;
  phases = s.phases || [];
  counts = s.counts || {};
  nodes.clear();
  $("grid").replaceChildren();
  for (const v of s.nodes || []) setNode(v);
  $("refusal").textContent = s.refusal || "";
  renderCounts();
  renderDetail();
  if (s.ended) ended(s.ended);
}

function ended(why) {
  conn("ended", "watch ended" + (why ? ": " + why : ""));
  source.close();
}

function conn(state, text) {
  $("conn").dataset.state = state;
  $("conn").textContent = text;
}

const source = new EventSource("events");
source.addEventListener("open", () => conn("live", "live"));
source.addEventListener("error", () => { if (source.readyState !== EventSource.CLOSED) conn("lost", "reconnecting…"); });
source.addEventListener("snapshot", (m) => snapshot(JSON.parse(m.data)));
source.addEventListener("node", (m) => {
  const u = JSON.parse(m.data);
  offset = Date.parse(u.now) - Date.now();
  if (u.counts) { counts = u.counts; renderCounts(); }
  setNode(u.node);
});
source.addEventListener("refusal", (m) => { $("refusal").textContent = JSON.parse(m.data).refusal; });
source.addEventListener("ended", (m) => ended(JSON.parse(m.data).ended));

document.addEventListener("DOMContentLoaded", () => {
  $("filter").addEventListener("input", refilter);
  $("close").addEventListener("click", () => select(""));
  setInterval(() => {
    for (const e of nodes.values()) if (!e.tile.hidden) e.tile.children[3].textContent = ago(e.view.since);
    if (selected) $("d-since").textContent = ago(nodes.get(selected).view.since);
  }, 1000);
});
