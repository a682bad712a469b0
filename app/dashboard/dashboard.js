// PayFlow dashboard: plain JavaScript, no build step. It polls the app's own API:
//   /api/config every 1 s (faults in force, replica, restart count),
//   /api/faults/history every 2 s (the fault bands: the ground truth),
//   /api/stats/series every 3 s (the charts), /api/transactions every 3 s.
// When the API does not answer (the app restarting in a crash loop), the page says since when,
// keeps the last data it had, greyed, and goes on trying.
"use strict";

(() => {
  const MINUTES = 15;
  const STEP = 5;
  const FETCH_TIMEOUT_MS = 4000;
  const TX_TIMEOUT_MS = 15000;
  const FAULT_COLORS = {
    latency: "#b07800", errorRate: "#cf222e", cpuBurn: "#bc4c00",
    panic: "#8250df", oom: "#bf3989", dbTimeout: "#0969da",
  };

  const $ = (id) => document.getElementById(id);
  const state = {
    config: null, series: null, history: null, bands: [],
    failingSince: null, lastOk: null, restartCount: null, processStart: null,
    announced: "",
  };

  // Screen readers hear changes only (the visible panels refresh every second).
  function announce(text) {
    if (text !== state.announced) {
      state.announced = text;
      $("announce").textContent = text;
    }
  }

  // --- formatting -----------------------------------------------------------------------------
  const pad = (n) => String(n).padStart(2, "0");
  const clock = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  function ago(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
    return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  }
  const nowS = () => Date.now() / 1000;
  const epoch = (iso) => Date.parse(iso) / 1000;
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null) continue;
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  // --- fetching -------------------------------------------------------------------------------
  async function getJSON(path, timeoutMs = FETCH_TIMEOUT_MS) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), timeoutMs);
    try {
      const resp = await fetch(path, { signal: ctrl.signal, cache: "no-store" });
      const body = await resp.json().catch(() => null);
      if (!resp.ok) {
        const err = new Error((body && body.error && body.error.code) || `HTTP ${resp.status}`);
        err.http = resp.status;
        throw err;
      }
      return body;
    } finally {
      clearTimeout(timer);
    }
  }

  // Each poller waits for its own previous call: a slow API never piles requests up.
  function poll(periodMs, task) {
    const run = async () => {
      const started = performance.now();
      try { await task(); } catch (e) { /* each task reports its own errors */ }
      setTimeout(run, Math.max(0, periodMs - (performance.now() - started)));
    };
    run();
  }

  // --- connection state -----------------------------------------------------------------------
  function reachable() {
    state.failingSince = null;
    state.lastOk = new Date();
    document.body.classList.remove("offline");
  }
  function unreachable() {
    if (state.failingSince === null) state.failingSince = new Date();
    document.body.classList.add("offline");
    announce("The API is unreachable: the app may be restarting.");
  }
  function renderStatus() {
    const status = $("status");
    if (state.failingSince) {
      status.dataset.state = "offline";
      const since = state.failingSince;
      const last = state.lastOk ? ` · data of ${clock(state.lastOk)}` : "";
      status.textContent = `API unreachable for ${ago((Date.now() - since) / 1000)} (since ${clock(since)}): ` +
        `app restarting?${last} · retrying`;
      status.title = "The app does not answer: a crash (OOM, panic) and its restart back-off, or a rollout.";
    } else if (state.lastOk) {
      status.dataset.state = "live";
      status.textContent = `Live · updated ${clock(state.lastOk)}`;
      status.title = "";
    }
    $("faults-title").textContent = state.failingSince ? "Faults in force (last known)" : "Faults in force";
  }

  // --- config: faults in force, replica, restarts ---------------------------------------------
  async function refreshConfig() {
    let cfg;
    try {
      cfg = await getJSON("/api/config");
    } catch (e) {
      unreachable();
      renderStatus();
      return;
    }
    reachable();
    state.config = cfg;
    renderConfig(cfg);
    renderStatus();
    drawAllBands();
  }

  function renderConfig(cfg) {
    $("replica").textContent = cfg.replica;
    $("release").textContent = `${cfg.release} / ${cfg.namespace}`;
    const restarts = cfg.settings ? cfg.settings.restart_count : null;
    $("restarts").textContent = restarts === null || restarts === undefined ? "n/a" : String(restarts);
    $("restarts").title = restarts === null || restarts === undefined
      ? "Not told by the supervisor: in a cluster, see kubectl get pods (RESTARTS)"
      : "Times the local supervisor restarted the app (a crash or a rollout)";

    const box = $("faults");
    const active = Object.entries(cfg.faults).filter(([, f]) => f.active);
    announce(active.length === 0 ? "No fault in force."
      : `Faults in force: ${active.map(([name, f]) => (f.incidents.length
        ? `${name} (incident ${f.incidents.map((i) => i.incident).join(", ")})` : name)).join("; ")}.`);
    box.replaceChildren();
    if (active.length === 0) {
      box.append(el("p", { class: "baseline", dataset: { fault: "none" } }, "No fault in force: the baseline."));
    }
    for (const [name, f] of active) {
      const incidents = f.incidents.map((i) => i.incident);
      const params = Object.entries(f.params).map(([k, v]) => `${k}=${v}`).join(" ");
      const since = new Date(f.since);
      const untils = f.incidents.map((i) => i.expiresAt).filter(Boolean).map(Date.parse);
      const until = f.incidents.length === 0 ? "until the configuration changes"
        : untils.length < f.incidents.length ? "until its incident is deleted"
        : `until ${clock(new Date(Math.max(...untils)))} (in ${ago((Math.max(...untils) - Date.now()) / 1000)})`;
      box.append(el("div", {
        class: "fault-card", role: "group", "aria-label": `fault ${name}`,
        dataset: { fault: name, incidents: incidents.join(","), since: f.since },
      },
      el("div", {}, el("span", { class: "name" }, name), " ",
        el("span", { class: "params" }, params)),
      el("div", {}, incidents.length
        ? el("span", { class: "incident" }, `incident ${incidents.join(", ")}`)
        : el("span", { class: "muted" }, `from the ${f.source}`)),
      el("div", { class: "when" },
        `since ${clock(since)} (${ago((Date.now() - since) / 1000)} ago) · ${until}`)));
    }
  }

  // --- fault history: intervals for the bands ---------------------------------------------------
  // History rows are transitions per replica (on / changed / off) and crashes (kind "crash": the
  // fault acted, the interval goes on). A replica that crashed records the end of its faults at
  // its next start, so an interval still open ends where the evidence says: now if the fault is
  // still in force here; else when this process started (another, earlier process left it
  // open); else when this process turned it off (its `since` in /api/config).
  function faultIntervals(items, cfg, processStart, now) {
    const open = new Map();
    const spans = [];
    const rows = items.filter((r) => r.kind !== "crash")
      .sort((a, b) => epoch(a.at) - epoch(b.at) || a.id - b.id);
    for (const r of rows) {
      const key = `${r.fault}|${r.replica}`;
      const t = epoch(r.at);
      const was = open.get(key);
      if (was) { spans.push({ ...was, to: t }); open.delete(key); }
      if (r.change !== "off") {
        open.set(key, { fault: r.fault, from: t, incidents: (r.incidents || []).map((i) => i.incident) });
      }
    }
    const faults = (cfg && cfg.faults) || {};
    for (const [key, span] of open) {
      const replica = key.slice(key.indexOf("|") + 1);
      const f = faults[span.fault];
      let to;
      if (f && f.active) to = now;
      else if (cfg && replica !== cfg.replica && processStart) to = Math.max(span.from, processStart);
      else if (f) to = Math.max(span.from, epoch(f.since));
      else to = now;
      spans.push({ ...span, to });
    }
    // What /api/config says is in force now is ground truth too (it may be ahead of the history).
    for (const [name, f] of Object.entries(faults)) {
      if (f.active) {
        spans.push({ fault: name, from: epoch(f.since), to: now, incidents: f.incidents.map((i) => i.incident) });
      }
    }
    // One band per fault and stretch of time: merge what overlaps (replicas, restarts).
    spans.sort((a, b) => a.fault.localeCompare(b.fault) || a.from - b.from);
    const merged = [];
    for (const s of spans) {
      const last = merged[merged.length - 1];
      if (last && last.fault === s.fault && s.from <= last.to + 1) {
        last.to = Math.max(last.to, s.to);
        for (const i of s.incidents) if (!last.incidents.includes(i)) last.incidents.push(i);
      } else {
        merged.push({ ...s, incidents: [...s.incidents] });
      }
    }
    for (const m of merged) m.active = Boolean(faults[m.fault] && faults[m.fault].active && m.to >= now - 1);
    return merged;
  }

  async function refreshHistory() {
    let body;
    try {
      body = await getJSON("/api/faults/history?limit=500");
      $("history-note").textContent = "";
    } catch (e) {
      $("history-note").textContent = e.http ? `(not updated: ${e.message})` : "";
      return;
    }
    state.history = body.items;
    renderHistory(body.items);
    drawAllBands();
  }

  function renderHistory(items) {
    const list = $("history");
    list.replaceChildren();
    if (items.length === 0) list.append(el("li", { class: "muted" }, "No fault has been switched yet."));
    for (const r of items.slice(0, 12)) {
      const incidents = (r.incidents || []).map((i) => i.incident).join(", ");
      list.append(el("li", { dataset: { fault: r.fault } },
        el("time", { datetime: r.at }, clock(new Date(r.at))),
        el("span", { class: "fault" }, r.fault),
        el("span", { class: `change-${r.change}` }, r.change),
        el("span", { class: "muted" }, [
          incidents ? `incident ${incidents}` : `${r.source}`,
          r.kind === "crash" ? ` · ${r.pod || r.replica}: ${r.reason || "exit"} (${r.exit_code ?? "?"})` : "",
          r.reason && r.kind !== "crash" ? ` · ${r.reason.replaceAll("_", " ")}` : "",
        ].join(""))));
    }
  }

  // --- charts -------------------------------------------------------------------------------------
  const charts = {};
  function makeChart(id, series, yOpts) {
    const fig = $(id);
    const host = fig.querySelector(".plot");
    const opts = {
      width: Math.max(200, host.clientWidth),
      height: Math.max(120, host.clientHeight),
      legend: { show: false },
      cursor: { points: { show: true }, drag: { x: false, y: false } },
      scales: { x: { time: true }, y: yOpts.scale },
      axes: [
        { stroke: "#4f5963", grid: { stroke: "#eaeef2" }, ticks: { stroke: "#d0d7de" }, size: 28, space: 60,
          values: (u, splits) => splits.map((v) => { const d = new Date(v * 1000); return `${pad(d.getHours())}:${pad(d.getMinutes())}`; }) },
        { stroke: "#4f5963", grid: { stroke: "#eaeef2" }, ticks: { stroke: "#d0d7de" }, size: 62,
          values: (u, splits) => splits.map((v) => (v === null || v === undefined ? "" : yOpts.values(v))),
          ...(yOpts.splits ? { splits: yOpts.splits } : {}) },
      ],
      series: [{}, ...series],
      hooks: { draw: [(u) => drawBands(u, fig)] },
    };
    const u = new uPlot(opts, [[], ...series.map(() => [])], host);
    new ResizeObserver(() => u.setSize({ width: Math.max(200, host.clientWidth), height: Math.max(120, host.clientHeight) }))
      .observe(host);
    charts[id] = { u, fig };
    return u;
  }

  function setupCharts() {
    makeChart("chart-rate", [
      { label: "req/s", stroke: "#0969da", width: 2, fill: "rgba(9,105,218,0.08)", points: { show: false } },
    ], { scale: { range: (u, min, max) => [0, Math.max(1, (max || 0) * 1.15)] }, values: (x) => x.toFixed(x < 10 ? 1 : 0) });
    makeChart("chart-errors", [
      { label: "5xx %", stroke: "#cf222e", width: 2, fill: "rgba(207,34,46,0.08)", points: { show: false } },
    ], { scale: { range: (u, min, max) => [0, Math.max(5, Math.min(100, (max || 0) * 1.15))] }, values: (x) => `${x}%` });
    makeChart("chart-latency", [
      { label: "p50 ms", stroke: "#116329", width: 2, points: { show: false } },
      { label: "p95 ms", stroke: "#8250df", width: 2, points: { show: false } },
    ], {
      // Log scale from one decade below the fastest to one above the slowest: a 5 s incident and
      // a 5 ms baseline both stay readable.
      scale: {
        distr: 3, log: 10,
        range: (u, min, max) => [
          10 ** Math.floor(Math.log10(Math.max(1, min || 1))),
          10 ** Math.max(2, Math.ceil(Math.log10(Math.max(1, max || 1) * 2))),  // room for the band labels
        ],
      },
      splits: (u, axis, min, max) => {
        const out = [];
        for (let d = min; d <= max * 1.001; d *= 10) { out.push(d); if (d * 3 < max) out.push(d * 3); }
        return out;
      },
      values: (x) => (x >= 1000 ? `${x / 1000} s` : `${x} ms`),
    });
  }

  async function refreshSeries() {
    let body;
    try {
      body = await getJSON(`/api/stats/series?minutes=${MINUTES}&step=${STEP}`);
    } catch (e) {
      return;
    }
    state.series = body;
    const started = epoch(body.process_started_at);
    state.processStart = started;
    $("uptime").textContent = ago(epoch(body.generated_at) - started);
    $("uptime").title = `since ${new Date(body.process_started_at).toLocaleString()}`;
    const end = epoch(body.generated_at);
    // The step still filling is left out: its rate over a second or two is noise.
    const pts = body.points.filter((p) => p.t + body.step <= end);
    const t = pts.map((p) => p.t);
    const xRange = { min: end - MINUTES * 60, max: end };
    const data = {
      "chart-rate": [t, pts.map((p) => p.rate_per_s)],
      "chart-errors": [t, pts.map((p) => (p.error_ratio === null ? null : p.error_ratio * 100))],
      "chart-latency": [t, pts.map((p) => p.p50_ms), pts.map((p) => p.p95_ms)],
    };
    for (const [id, d] of Object.entries(data)) {
      const { u, fig } = charts[id];
      u.batch(() => {
        u.setData(d, false);
        u.setScale("x", xRange);
      });
      fig.dataset.points = String(t.length);
      fig.dataset.updated = body.generated_at;
      fig.dataset.source = body.source;
    }
    const last = pts[pts.length - 1];
    const fmt = (v, digits) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
    setLatest("chart-rate", `${fmt(last && last.rate_per_s, 1)} req/s`, last && last.rate_per_s);
    setLatest("chart-errors", `${fmt(last && last.error_ratio !== null ? last.error_ratio * 100 : null, 1)} %`,
      last && last.error_ratio);
    setLatest("chart-latency", `p50 ${fmt(last && last.p50_ms, 0)} ms · p95 ${fmt(last && last.p95_ms, 0)} ms`,
      last && last.p95_ms);
    const note = body.source === "memory" ? " (Redis unreachable: this process only)" : "";
    $("band-legend").dataset.source = body.source;
    $("band-legend").textContent = "Shaded: a fault in force (ground truth from /api/faults/history). " +
      `Lines: what the API served, all replicas, ${STEP}-second steps${note}.`;
  }

  function setLatest(id, text, value) {
    const latest = $(id).querySelector(".latest");
    latest.textContent = text;
    $(id).dataset.latest = value === null || value === undefined ? "" : String(value);
  }

  // Bands live in uPlot's overlay: real elements (with the fault and incident as data attributes
  // and a tooltip), placed from the x scale on every redraw.
  function drawBands(u, fig) {
    const over = u.over;
    for (const old of over.querySelectorAll(".band")) old.remove();
    const xMin = u.scales.x.min;
    const xMax = u.scales.x.max;
    if (xMin === undefined || xMin === null) return;
    const order = Object.keys(FAULT_COLORS);
    for (const b of state.bands) {
      if (b.to < xMin || b.from > xMax) continue;
      const left = u.valToPos(Math.max(b.from, xMin), "x");
      const right = u.valToPos(Math.min(b.to, xMax), "x");
      const band = el("div", {
        class: "band",
        title: `${b.fault}${b.incidents.length ? ` (incident ${b.incidents.join(", ")})` : ""}: ` +
          `${clock(new Date(b.from * 1000))} – ${b.active ? "now" : clock(new Date(b.to * 1000))}`,
        dataset: {
          fault: b.fault, incidents: b.incidents.join(","), from: String(b.from),
          to: String(b.to), active: String(b.active),
        },
      });
      band.style.left = `${left}px`;
      band.style.width = `${Math.max(2, right - left)}px`;
      const label = el("span", { class: "band-label" }, b.incidents.length ? `${b.fault} · ${b.incidents.join(", ")}` : b.fault);
      label.style.top = `${2 + 15 * Math.max(0, order.indexOf(b.fault))}px`;
      band.append(label);
      over.append(band);
      // The label starts at its band, shifted left just enough to stay inside the plot.
      const shift = Math.min(0, over.clientWidth - left - label.offsetWidth - 3);
      label.style.left = `${3 + shift}px`;
    }
    fig.dataset.bands = String(over.querySelectorAll(".band").length);
  }

  function drawAllBands() {
    state.bands = faultIntervals(state.history || [], state.config, state.processStart, nowS());
    for (const { u, fig } of Object.values(charts)) drawBands(u, fig);
  }

  // --- transactions -------------------------------------------------------------------------------
  async function refreshTransactions() {
    // The product's own endpoint: faults reach it, so it may be slow or fail; the panel says so.
    let body;
    const started = performance.now();
    try {
      body = await getJSON("/api/transactions?limit=10", TX_TIMEOUT_MS);
    } catch (e) {
      $("tx-note").textContent = e.http ? `(not updated: HTTP ${e.http} ${e.message})`
        : e.name === "AbortError" ? `(not updated: no answer within ${TX_TIMEOUT_MS / 1000} s)` : "(not updated)";
      return;
    }
    const took = (performance.now() - started) / 1000;
    $("tx-note").textContent = took >= 1 ? `(answered in ${took.toFixed(1)} s)` : "";
    const rows = $("tx-rows");
    rows.replaceChildren();
    if (body.items.length === 0) rows.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No transaction yet.")));
    for (const tx of body.items) {
      rows.append(el("tr", { dataset: { id: tx.id } },
        el("td", {}, clock(new Date(tx.created_at))),
        el("td", { class: "num" }, `${tx.amount} ${tx.currency}`),
        el("td", {}, el("span", { class: `pill ${tx.status}`, title: tx.decline_reason || "" }, tx.status)),
        el("td", {}, tx.merchant_ref),
        el("td", { class: "id" }, tx.id.slice(0, 8))));
    }
  }

  function start() {
    setupCharts();
    poll(1000, refreshConfig);
    poll(2000, refreshHistory);
    poll(3000, refreshSeries);
    poll(3000, refreshTransactions);
    setInterval(() => { renderStatus(); drawAllBands(); }, 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
