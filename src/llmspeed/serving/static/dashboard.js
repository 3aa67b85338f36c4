// llmspeed live dashboard: polls /dashboard/data once a second (Authorization: Bearer <key>, the key kept in this
// tab's sessionStorage only), keeps a bounded history, draws it with uPlot. No other network access.
"use strict";
(() => {
  const KEY_ITEM = "llmspeed.dashboard.key";
  const body = document.body;
  const needAuth = body.dataset.auth === "1";
  const hasReports = body.dataset.reports === "1";
  const $ = (id) => document.getElementById(id);
  let key = sessionStorage.getItem(KEY_ITEM) || "";
  let points = [];
  let maxPoints = 900;
  let lastT = null;
  let blocked = false; // a 401 stops polling until a new key is entered
  let reportURL = null;

  const headers = () => (key ? { Authorization: "Bearer " + key } : {});
  const setStatus = (text, cls) => { const s = $("status"); s.textContent = text; s.className = "status " + cls; };

  // ---------------------------------------------------------------- formatting
  const num = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v) ? "–" : v.toFixed(d));
  const ms = (v) => (v === null || v === undefined ? "–" : (v * 1000).toFixed(v < 0.01 ? 2 : 0));
  const pct = (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(1) + " %");
  const trio = (p, k, f) => [50, 90, 99].map((q) => f(p[`${k}_p${q}`])).join(" / ");

  // ---------------------------------------------------------------- tiles
  function tiles(p, totals) {
    const kv = p.kv_total ? `${num(p.kv_used, 0)} / ${num(p.kv_total, 0)} (${pct(p.kv_used / p.kv_total)})` : "–";
    const spec = totals.spec_available ? pct(p.spec_accept ?? totals.spec_accept) : "n/a";
    const t = [
      ["requests/s", num(p.req_s, 2)], ["tokens/s", num(p.tok_s, 1)], ["running batch", num(p.running, 0)],
      ["queue depth", num(p.waiting, 0)], ["KV blocks used", kv],
      ["TTFT p50/p90/p99 (ms)", trio(p, "ttft", ms)], ["TPOT p50/p90/p99 (ms)", trio(p, "tpot", ms)],
      ["E2E p50/p90/p99 (s)", trio(p, "e2e", (v) => num(v, 2))],
      ["prefix-cache hit", pct(p.prefix_hit ?? totals.prefix_hit)],
      ["response-cache hit", pct(p.resp_hit ?? totals.resp_hit)], ["spec. acceptance", spec],
      ["requests (total)", num(totals.requests, 0)], ["rejected (total)", num(totals.rejected, 0)],
      ["failed (total)", num(totals.failures, 0)],
    ];
    const box = $("tiles");
    box.replaceChildren(...t.map(([k, v]) => {
      const d = document.createElement("div");
      d.className = "tile";
      d.dataset.k = k;
      const a = document.createElement("div"); a.className = "k"; a.textContent = k;
      const b = document.createElement("div"); b.className = "v"; b.textContent = v;
      d.append(a, b);
      return d;
    }));
  }

  // ---------------------------------------------------------------- charts
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"];
  const line = (label, i, scale) => ({ label, stroke: COLORS[i], width: 1.6, scale: scale || "y" });
  const zeroUp = { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] }; // counts and latencies start at 0
  const pctAxis = { scale: "f", values: (u, vs) => vs.map((v) => (v * 100).toFixed(0) + "%") };
  const CHARTS = {
    "c-tput": { fields: ["tok_s", "req_s"], series: [line("tokens/s", 0), line("requests/s", 1, "r")],
      axes: [{}, { scale: "r", side: 1, grid: { show: false } }] },
    "c-ttft": { fields: ["ttft_p50", "ttft_p90", "ttft_p99"], series: ["p50", "p90", "p99"].map((l, i) => line(l, i)) },
    "c-tpot": { fields: ["tpot_p50", "tpot_p90", "tpot_p99"], series: ["p50", "p90", "p99"].map((l, i) => line(l, i)) },
    "c-e2e": { fields: ["e2e_p50", "e2e_p90", "e2e_p99"], series: ["p50", "p90", "p99"].map((l, i) => line(l, i)) },
    "c-batch": { fields: ["running", "waiting", "kv_used"],
      series: [line("running", 0), line("waiting", 1), line("KV blocks used", 2, "kv")],
      axes: [{}, { scale: "kv", side: 1, grid: { show: false } }] },
    "c-hits": { fields: ["prefix_hit", "resp_hit", "spec_accept"],
      series: [line("prefix cache", 0, "f"), line("response cache", 1, "f"), line("spec. acceptance", 2, "f")],
      scales: { f: { range: [0, 1] } }, axes: [pctAxis] },
  };
  const plots = {};

  function width(el) { return Math.max(300, el.clientWidth - 12); }

  function makeCharts() {
    for (const [id, c] of Object.entries(CHARTS)) {
      const el = $(id);
      const axes = [{}].concat(c.axes || [{}]);
      const opts = { width: width(el), height: 210, series: [{}].concat(c.series), axes,
        scales: Object.assign({ x: { time: true }, y: zeroUp, r: zeroUp, kv: zeroUp }, c.scales || {}), legend: { live: false } };
      plots[id] = new uPlot(opts, [[], ...c.fields.map(() => [])], el);
    }
    window.addEventListener("resize", () => {
      for (const [id, u] of Object.entries(plots)) u.setSize({ width: width($(id)), height: 210 });
    });
  }

  function draw() {
    const xs = points.map((p) => p.t);
    for (const [id, c] of Object.entries(CHARTS)) {
      plots[id].setData([xs, ...c.fields.map((f) => points.map((p) => (p[f] === undefined ? null : p[f])))]);
    }
  }

  // ---------------------------------------------------------------- polling
  async function poll() {
    if (blocked) return;
    if (needAuth && !key) { setStatus("enter the API key", "warn"); return; }
    const url = "/dashboard/data" + (lastT === null ? "" : "?since=" + lastT);
    let r;
    try {
      r = await fetch(url, { headers: headers(), cache: "no-store" });
    } catch (e) {
      setStatus("server unreachable", "err");
      return;
    }
    if (r.status === 401) { blocked = true; setStatus("key rejected (401)", "err"); return; }
    if (!r.ok) { setStatus(`error ${r.status}`, "err"); return; }
    const d = await r.json();
    maxPoints = Math.max(10, Math.round(d.history_s / d.interval_s));
    for (const p of d.points) if (lastT === null || p.t > lastT) { points.push(p); lastT = p.t; }
    if (points.length > maxPoints) points = points.slice(points.length - maxPoints);
    if (points.length) tiles(points[points.length - 1], d.totals);
    draw();
    $("windows").textContent = `rates over the last ${d.rate_window_s} s, latency quantiles and hit rates over the ` +
      `last ${d.quantile_window_s} s (from /metrics histograms); history ${Math.round(d.history_s / 60)} min.`;
    setStatus("live · " + new Date(d.now * 1000).toLocaleTimeString(), "ok");
    body.dataset.points = String(points.length);
  }

  // ---------------------------------------------------------------- reports
  function showHTML(text) {
    if (reportURL) URL.revokeObjectURL(reportURL);
    reportURL = URL.createObjectURL(new Blob([text], { type: "text/html" }));
    const f = document.createElement("iframe");
    f.setAttribute("sandbox", ""); // no scripts, opaque origin: a report cannot read the key
    f.src = reportURL;
    $("report-view").replaceChildren(f);
  }

  function cell(tag, text) { const c = document.createElement(tag); c.textContent = text; return c; }

  function showJSON(text) {
    const view = $("report-view");
    let rep;
    try { rep = JSON.parse(text); } catch (e) { view.replaceChildren(cell("p", "not a JSON file: " + e.message)); return; }
    const scen = rep.scenarios || [];
    const head = document.createElement("tr");
    head.append(cell("th", "row (median tok/s)"), cell("th", "status"), ...scen.map((s) => cell("th", s)));
    const rows = (rep.rows || []).map((row) => {
      const tr = document.createElement("tr");
      tr.append(cell("td", row.label || row.engine || "?"), cell("td", row.status || ""));
      for (const s of scen) {
        const m = row.scenarios && row.scenarios[s] && row.scenarios[s].tok_s ? row.scenarios[s].tok_s.median : null;
        tr.append(cell("td", m === null || m === undefined ? "–" : m.toFixed(1)));
      }
      return tr;
    });
    const table = document.createElement("table");
    table.append(head, ...rows);
    const env = rep.environment || {};
    const meta = cell("p", `${rep.schema || "unknown schema"} · ${rep.created || ""} · ${env.cpu_model || ""}`);
    view.replaceChildren(meta, table);
  }

  async function openReport(path) {
    const r = await fetch("/dashboard/reports/file?path=" + encodeURIComponent(path), { headers: headers() });
    if (!r.ok) { $("report-view").replaceChildren(cell("p", `could not open ${path}: ${r.status}`)); return; }
    const text = await r.text();
    if (path.endsWith(".html")) showHTML(text); else showJSON(text);
  }

  async function listReports() {
    const note = $("reports-note");
    if (!hasReports) { note.textContent = "Start the server with --reports DIR to list the reports there."; return; }
    if (needAuth && !key) { note.textContent = "Enter the API key to list the reports."; return; }
    const r = await fetch("/dashboard/reports", { headers: headers() });
    if (!r.ok) { note.textContent = `could not list reports: ${r.status}`; return; }
    const d = await r.json();
    note.textContent = d.reports.length ? `${d.reports.length} report(s), newest first` : "no reports found";
    $("report-list").replaceChildren(...d.reports.map((rep) => {
      const li = document.createElement("li");
      li.append(cell("span", `${rep.dir || "."} ${rep.created ? "· " + rep.created : ""}` +
        (rep.models ? " · " + rep.models.join(", ") : "")));
      for (const f of rep.files) {
        const b = cell("button", f);
        b.type = "button";
        b.addEventListener("click", () => openReport(rep.dir ? `${rep.dir}/${f}` : f));
        li.append(b);
      }
      return li;
    }));
  }

  $("report-file").addEventListener("change", (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    file.text().then((text) => (file.name.endsWith(".json") ? showJSON(text) : showHTML(text)));
  });

  // ---------------------------------------------------------------- key form
  $("keyform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    key = $("key").value.trim();
    $("key").value = "";
    if (key) sessionStorage.setItem(KEY_ITEM, key); else sessionStorage.removeItem(KEY_ITEM);
    blocked = false;
    poll();
    listReports();
  });
  $("keyforget").addEventListener("click", () => {
    key = ""; sessionStorage.removeItem(KEY_ITEM); blocked = false; poll();
  });
  if (!needAuth) $("keyform").hidden = true;

  makeCharts();
  window.llmspeedDashboard = { plots, points: () => points }; // read-only handle for tests and the console
  poll();
  listReports();
  setInterval(poll, 1000);
})();
