// edgeclip's web page: fills the server-rendered skeleton of each page from the JSON API.
// Plain JavaScript, no library, no build step; charts are drawn on a canvas.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

// A path with the token kept (the page works from a link that carries it).
function withToken(path) {
  if (!TOKEN) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

async function api(path) {
  const r = await fetch(withToken(path));
  const body = await r.json().catch(() => ({ error: r.status + " " + r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

function showError(e) {
  document.getElementById("error").textContent = e ? String(e.message || e) : "";
}

function fmt(x) {
  return x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(3);
}

function localTime(ms) {
  return new Date(ms).toLocaleString();
}

// Draws series over time on a canvas: lines [{t: [ms], v: [values], color}], dashed
// horizontal levels [{y, color}], the y range fitted to both.
function chart(canvas, lines, levels, xmin, xmax) {
  const g = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 50, B = 24, T = 8, R = 8;
  g.clearRect(0, 0, W, H);
  let lo = Infinity, hi = -Infinity;
  for (const l of lines) for (const v of l.v) if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  for (const s of levels) { lo = Math.min(lo, s.y); hi = Math.max(hi, s.y); }
  if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
  if (hi - lo < 1e-3) { hi += 0.05; lo -= 0.05; }
  const pad = (hi - lo) * 0.05; lo -= pad; hi += pad;
  const x = (t) => L + ((t - xmin) / Math.max(1, xmax - xmin)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  g.strokeStyle = "#ccc"; g.fillStyle = "#555"; g.font = "11px sans-serif"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    g.beginPath(); g.moveTo(L, y(v)); g.lineTo(W - R, y(v)); g.stroke();
    g.fillText(v.toFixed(3), 2, y(v) + 4);
  }
  g.fillText(new Date(xmin).toLocaleTimeString(), L, H - 6);
  const end = new Date(xmax).toLocaleTimeString();
  g.fillText(end, W - R - g.measureText(end).width, H - 6);
  for (const s of levels) {
    g.strokeStyle = s.color; g.setLineDash([5, 4]);
    g.beginPath(); g.moveTo(L, y(s.y)); g.lineTo(W - R, y(s.y)); g.stroke();
  }
  g.setLineDash([]); g.lineWidth = 1.5;
  for (const l of lines) {
    g.strokeStyle = l.color; g.beginPath();
    let started = false;
    l.t.forEach((t, i) => {
      const v = l.v[i];
      if (!Number.isFinite(v)) { started = false; return; }
      if (started) g.lineTo(x(t), y(v)); else { g.moveTo(x(t), y(v)); started = true; }
    });
    g.stroke();
  }
}

// Live: the latest frame, each label's score over the last minutes with its threshold.
async function live() {
  let shown = null;
  const img = document.getElementById("frame");
  img.addEventListener("error", () => { shown = null; });
  async function tick() {
    try {
      const d = await api("/api/live");
      showError(null);
      if (d.frame !== null && d.frame !== shown) {
        shown = d.frame;
        img.src = withToken("/api/frame.jpg?seq=" + d.frame);
      }
      document.getElementById("frame-info").textContent =
        d.camera + ": " + d.frames + " frames processed, scores as " + d.metric;
      const now = d.t.length ? d.t[d.t.length - 1] : Date.now();
      chart(document.getElementById("chart"),
        d.labels.map((l, i) => ({ t: d.t, v: d.scores[i], color: COLORS[i % COLORS.length] })),
        d.labels.map((l, i) => ({ y: l.threshold, color: COLORS[i % COLORS.length] })),
        Math.max(now - 300000, d.t.length ? d.t[0] : now - 300000), now);
      const body = document.querySelector("#labels tbody");
      body.replaceChildren(...d.labels.map((l, i) => {
        const s = d.scores[i];
        return el("tr", { "data-label": l.label },
          el("td", {}, el("span", { class: "swatch", style: "background:" + COLORS[i % COLORS.length] }), l.label),
          el("td", {}, fmt(s.length ? s[s.length - 1] : null)),
          el("td", {}, fmt(l.threshold)),
          el("td", {}, l.enter_frames + " / " + l.exit_frames),
          el("td", {}, el("span", { class: l.active ? "on" : "off" }, l.active ? "active" : "idle")));
      }));
    } catch (e) { showError(e); }
  }
  await tick();
  setInterval(tick, 1000);
}

// Events: the list, newest first, filtered by camera and label.
async function events() {
  const form = document.getElementById("filter");
  const params = new URLSearchParams(location.search);
  form.camera.value = params.get("camera") || "";
  form.label.value = params.get("label") || "";
  async function load() {
    const q = new URLSearchParams({ camera: form.camera.value, label: form.label.value, limit: 200 });
    try {
      const list = await api("/api/events?" + q);
      showError(list.length ? null : "no events yet");
      document.querySelector("#events tbody").replaceChildren(...list.map((e) =>
        el("tr", { class: "event", "data-label": e.label, "data-type": e.type },
          el("td", {}, localTime(e.ts_ms)), el("td", {}, e.camera), el("td", {}, e.label),
          el("td", {}, e.type), el("td", {}, fmt(e.score)),
          el("td", {}, e.snapshot_url ? el("a", { href: withToken(e.snapshot_url) },
            el("img", { src: withToken(e.snapshot_url), alt: e.label })) : ""))));
    } catch (e) { showError(e); }
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  await load();
  setInterval(load, 5000);
}

function queryForm(run) {
  const form = document.getElementById("query");
  const params = new URLSearchParams(location.search);
  form.q.value = params.get("q") || "";
  form.since.value = params.get("since") || "";
  form.addEventListener("submit", (ev) => { ev.preventDefault(); run(form.q.value, form.since.value); });
  if (form.q.value) run(form.q.value, form.since.value);
}

// Search: a text against the stored frames, moments best first.
function search() {
  queryForm(async (text, since) => {
    const summary = document.getElementById("summary");
    summary.textContent = "searching…";
    try {
      const q = new URLSearchParams({ q: text, since: since });
      const list = await api("/api/search?" + q);
      showError(null);
      summary.textContent = list.length ? list.length + (list.length === 1 ? " moment" : " moments") + " for \"" + text + "\"" : "no moments";
      document.getElementById("results").replaceChildren(...list.map((m) =>
        el("li", { class: "moment" },
          m.thumbnail ? el("img", { src: withToken(m.thumbnail), alt: text }) : "",
          el("b", {}, localTime(m.ts_ms)), el("br"),
          m.camera + ", frame " + m.frame + ", score " + fmt(m.score), el("br"),
          el("small", {}, m.hits + " frames, " + m.start + " to " + m.end))));
    } catch (e) { summary.textContent = ""; showError(e); }
  });
}

// Tune: a prompt's score over the stored history, the proposed threshold, the TOML lines.
function tune() {
  queryForm(async (text, since) => {
    const summary = document.getElementById("summary");
    summary.textContent = "scoring…";
    try {
      const q = new URLSearchParams({ q: text, since: since });
      const d = await api("/api/tune?" + q);
      showError(null);
      summary.textContent = d.frames + " stored frames scored (" + d.metric + "), best " + fmt(d.max) +
        (d.threshold !== null ? "; proposed threshold " + fmt(d.threshold) + " for " +
          d.target_per_day + " false alarm(s) a day (" + d.quiet_frames + " quiet frames, " +
          d.example_frames + " above the split as examples)" : "; no threshold: " + d.refused);
      const lo = d.t.length ? d.t[0] : Date.now() - 86400000;
      const hi = d.t.length ? d.t[d.t.length - 1] : Date.now();
      chart(document.getElementById("chart"), [{ t: d.t, v: d.scores, color: COLORS[1] }],
        d.threshold !== null ? [{ y: d.threshold, color: COLORS[0] }] : [], lo, hi);
      document.getElementById("toml").textContent = d.toml;
    } catch (e) { summary.textContent = ""; showError(e); }
  });
}

for (const a of document.querySelectorAll("header a")) a.href = withToken(a.getAttribute("href"));
({ live, events, search, tune })[document.body.dataset.page]();
