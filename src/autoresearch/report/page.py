"""The dashboard's page: one HTML document with its styles and script inline.

It loads nothing from anywhere (no CDN, no fonts, no images): the script polls `/api/state` on
the same server every few seconds and redraws the summary, the progress chart (SVG), the run
under way with its loss curve against the baseline's and the best's, and the ledger. Every
text from the ledger is inserted with `textContent`, never as HTML, so a description cannot
inject markup into the page.
"""

from __future__ import annotations

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>autoresearch dashboard</title>
<link rel="icon" href="data:,">
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f5f7;color:#222}
header{background:#1d2b36;color:#fff;padding:10px 20px;display:flex;gap:18px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}header .muted{color:#b8c4ce}
main{padding:14px 20px;max-width:1400px;margin:0 auto}
.card{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:10px 14px;margin-bottom:14px}
.card h2{font-size:15px;margin:0 0 8px}
.grid{display:grid;grid-template-columns:minmax(320px,1fr) minmax(420px,1.3fr);gap:14px}
@media (max-width:900px){.grid{grid-template-columns:1fr}}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:2px 8px;text-align:left;vertical-align:top}
#summary th{color:#555;font-weight:600;white-space:nowrap;width:1%}
#ledger thead th{position:sticky;top:0;background:#f6f6f6;border-bottom:1px solid #ccc}
#ledger tbody tr:nth-child(even){background:#fafafa}#ledger tr.improved td{font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ledger-wrap{max-height:520px;overflow:auto}
.badge{display:inline-block;padding:0 7px;border-radius:9px;color:#fff;font-size:12px}
.keep{background:#2ca02c}.discard{background:#8a8a8a}.crash{background:#d62728}.timeout{background:#ff7f0e}.invalid{background:#7f1d7f}
.bar{height:8px;background:#e6e6e6;border-radius:4px;overflow:hidden;margin:6px 0}.bar div{height:100%;background:#1f77b4;width:0}
#warnings{background:#fff6e0;color:#6b4a00;border:1px solid #f0d58a;padding:8px 12px;border-radius:6px;margin-bottom:14px;white-space:pre-wrap}
#error{background:#fde8e8;color:#8a1111;border:1px solid #f5b5b5;padding:8px 12px;border-radius:6px;margin-bottom:14px}
.warn{color:#b35900}svg{display:block;width:100%;height:auto}
a{color:#0b62a4;text-decoration:none}a:hover{text-decoration:underline}
.legend span{margin-right:14px;font-size:12px;color:#555}.legend i{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px}
</style></head>
<body>
<header><h1>autoresearch</h1><span id="folder" class="muted"></span><span id="updated" class="muted">connecting...</span></header>
<main>
<div id="error" hidden></div>
<div id="warnings" hidden></div>
<div class="grid">
  <section class="card"><h2>Summary</h2><table id="summary"><tbody></tbody></table></section>
  <section class="card"><h2>Now</h2><div id="current">waiting for the first update...</div>
    <div class="bar"><div id="bar-fill"></div></div>
    <svg id="loss-chart" viewBox="0 0 640 230" role="img" aria-label="training loss of the run under way"></svg>
    <div class="legend"><span><i style="background:#1f77b4"></i>this run</span><span><i style="background:#999"></i>baseline</span><span><i style="background:#2ca02c"></i>best</span></div>
  </section>
</div>
<section class="card"><h2>Progress</h2>
  <svg id="progress-chart" viewBox="0 0 1200 340" role="img" aria-label="val_bpb of every run and the running best"></svg>
  <div class="legend"><span><i style="background:#2ca02c"></i>running best / kept</span><span><i style="background:#9a9a9a"></i>discarded</span><span><i style="background:#1f77b4"></i>baseline (band: +-1 sigma)</span><span><i style="background:#d62728"></i>crash / timeout / invalid (top strip)</span></div>
</section>
<section class="card"><h2>Ledger <span id="ledger-count" class="muted"></span></h2>
  <div class="ledger-wrap"><table id="ledger"><thead><tr><th>#</th><th>run</th><th>status</th><th>kind</th><th>commit</th><th>val_bpb</th><th>gain</th><th>best</th><th>description</th></tr></thead><tbody></tbody></table></div>
</section>
</main>
<script>
"use strict";
const INTERVAL_MS = __INTERVAL_MS__;
const SVGNS = "http://www.w3.org/2000/svg";  // the SVG namespace's name (an identifier; nothing is fetched)
const COLOURS = {keep: "#2ca02c", discard: "#9a9a9a", crash: "#d62728", timeout: "#ff7f0e", invalid: "#7f1d7f", baseline: "#1f77b4"};
let lastText = null, lastState = null;

function el(tag, attrs, parent, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}
function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
function fmt(v, digits) { return v === null || v === undefined ? "-" : v.toFixed(digits === undefined ? 6 : digits); }
function signed(v) { return v === null || v === undefined ? "" : (v >= 0 ? "+" : "") + v.toFixed(4); }
function secs(v) { return v === null || v === undefined ? "-" : Math.round(v) + " s"; }

function renderSummary(state) {
  const body = document.querySelector("#summary tbody");
  clear(body);
  const lines = state.summary && state.summary.lines.length ? state.summary.lines : [["runs", "none recorded yet"]];
  for (const [label, text] of lines) {
    const tr = el("tr", {}, body);
    el("th", {}, tr, label);
    el("td", {}, tr, text);
  }
}

function renderCurrent(state) {
  const box = document.getElementById("current");
  const fill = document.getElementById("bar-fill");
  clear(box);
  const cur = state.current;
  if (!cur) {
    el("div", {}, box, "idle: no step under way (the loop is stopped, or between steps)");
    fill.style.width = "0";
  } else if (cur.phase !== "running" || !cur.run_id) {
    el("div", {}, box, (cur.phase || "working") + ": " + (cur.description || "the proposer is preparing the next change"));
    fill.style.width = "0";
  } else {
    const head = el("div", {}, box);
    el("strong", {}, head, "run " + cur.run_id + " (" + cur.kind + "): ");
    el("span", {id: "current-description"}, head, cur.description || "");
    const budget = cur.budget_s || state.budget_s;
    const parts = [];
    if (cur.training_seconds !== null) parts.push("trained " + secs(cur.training_seconds) + (budget ? " of " + secs(budget) : ""));
    if (cur.time_left_s !== null) parts.push(secs(cur.time_left_s) + " left");
    if (cur.step !== null) parts.push("step " + cur.step);
    if (cur.loss !== null) parts.push("loss " + fmt(cur.loss, 4));
    el("div", {id: "time-left"}, box, parts.join(" \u00b7 ") || "starting (no metrics yet)");
    el("div", {id: "quiet", class: "warn"}, box);
    const progress = cur.progress !== null ? cur.progress : (budget && cur.training_seconds !== null ? cur.training_seconds / budget : 0);
    fill.style.width = Math.max(0, Math.min(1, progress)) * 100 + "%";
  }
  const series = [];
  if (state.baseline_curve) series.push({curve: state.baseline_curve, colour: "#999", dash: "5 4", name: "baseline"});
  if (state.best_curve) series.push({curve: state.best_curve, colour: "#2ca02c", dash: "5 4", name: "best"});
  if (cur && cur.curve) series.push({curve: cur.curve, colour: "#1f77b4", dash: "", name: "this run"});
  drawLoss(document.getElementById("loss-chart"), series, state.budget_s);
}

function drawLoss(svg, series, budget) {
  clear(svg);
  const W = 640, H = 230, L = 52, R = 10, T = 10, B = 30;
  el("svg:rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fcfcfc", stroke: "#ddd"}, svg);
  if (!series.length) { el("svg:text", {x: W / 2, y: H / 2, "text-anchor": "middle", "font-size": 13, fill: "#888"}, svg, "no loss curves yet"); return; }
  let xMax = budget || 0, yMin = Infinity, yMax = -Infinity;
  for (const s of series) {
    const c = s.curve;
    xMax = Math.max(xMax, ...c.x);
    yMin = Math.min(yMin, ...c.loss);
    yMax = Math.max(yMax, c.loss[Math.min(c.loss.length - 1, Math.floor(c.loss.length / 10))]);
  }
  if (!(yMax > yMin)) yMax = yMin + 1;
  xMax = xMax || 1;
  const sx = x => L + (W - L - R) * x / xMax;
  const sy = y => T + (H - T - B) * (1 - (Math.min(y, yMax) - yMin) / (yMax - yMin));
  for (const s of series) {
    const pts = s.curve.x.map((x, i) => sx(x).toFixed(1) + "," + sy(s.curve.loss[i]).toFixed(1)).join(" ");
    const line = el("svg:polyline", {points: pts, fill: "none", stroke: s.colour, "stroke-width": 1.8, "stroke-dasharray": s.dash, class: "loss-line"}, svg);
    el("svg:title", {}, line, s.name + (s.curve.run_id ? " (run " + s.curve.run_id + ")" : ""));
  }
  el("svg:text", {x: L - 5, y: T + 10, "text-anchor": "end", "font-size": 11}, svg, yMax.toFixed(2));
  el("svg:text", {x: L - 5, y: H - B, "text-anchor": "end", "font-size": 11}, svg, yMin.toFixed(2));
  el("svg:text", {x: W - R, y: H - B + 16, "text-anchor": "end", "font-size": 11}, svg, Math.round(xMax) + "");
  el("svg:text", {x: (W + L) / 2, y: H - 4, "text-anchor": "middle", "font-size": 11, fill: "#555"}, svg,
     "training loss over " + (series[series.length - 1].curve.x_label || "time"));
}

function progressScale(ledger, summary) {
  const values = ledger.filter(r => r.val_bpb !== null).map(r => r.val_bpb);
  let low, high;
  if (!values.length) { low = 0; high = 1; }
  else if (summary && summary.baseline !== null && summary.best !== null) {
    const span = Math.max(summary.baseline - summary.best, 3 * summary.sigma, 1e-3 * Math.abs(summary.baseline), 1e-6);
    const sorted = values.slice().sort((a, b) => a - b);
    const typical = sorted[Math.floor(0.75 * (sorted.length - 1))];  // keep three in four runs in view, as progress.png does
    high = Math.max(Math.min(sorted[sorted.length - 1], Math.max(summary.baseline + 0.8 * span, typical)), summary.baseline + 0.3 * span);
    low = Math.min(summary.best - 0.12 * (high - summary.best), Math.max(sorted[0], summary.best - span));
  } else { low = Math.min(...values); high = Math.max(...values); }
  if (!(high - low > 1e-9)) { low -= 0.5; high += 0.5; }
  return {low, high, top: high + 0.12 * (high - low), strip: high + 0.07 * (high - low)};
}

function drawProgress(svg, ledger, summary) {
  clear(svg);
  const W = 1200, H = 340, L = 60, R = 12, T = 10, B = 30;
  el("svg:rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fff", stroke: "#ddd"}, svg);
  if (!ledger.length) { el("svg:text", {x: W / 2, y: H / 2, "text-anchor": "middle", "font-size": 14, fill: "#888"}, svg, "no runs recorded yet"); return; }
  const sc = progressScale(ledger, summary);
  const n = ledger.length + 1;
  const sx = x => L + (W - L - R) * x / n;
  const sy = y => T + (H - T - B) * (1 - (Math.min(y, sc.top) - sc.low) / (sc.top - sc.low));
  if (summary && summary.baseline !== null) {
    if (summary.sigma > 0) {
      const top = sy(summary.baseline + summary.sigma), bottom = sy(summary.baseline - summary.sigma);
      el("svg:rect", {x: L, y: top, width: W - L - R, height: Math.max(1, bottom - top), fill: COLOURS.baseline, opacity: 0.12, class: "noise-band"}, svg);
    }
    el("svg:line", {x1: L, x2: W - R, y1: sy(summary.baseline), y2: sy(summary.baseline), stroke: COLOURS.baseline, "stroke-dasharray": "5 4", opacity: 0.6}, svg);
  }
  const stripLine = sy(sc.high + 0.035 * (sc.high - sc.low));
  el("svg:line", {x1: L, x2: W - R, y1: stripLine, y2: stripLine, stroke: "#e4e4e4"}, svg);
  let path = "", prev = null;
  for (const r of ledger) {  // a step down wherever the running best changes
    if (r.best === null || (prev !== null && r.best === prev.best)) continue;
    const x = sx(r.number), y = sy(r.best);
    path += prev === null ? "M" + x.toFixed(1) + "," + y.toFixed(1) : "H" + x.toFixed(1) + "V" + y.toFixed(1);
    prev = r;
  }
  if (prev !== null) path += "H" + sx(ledger[ledger.length - 1].number + 0.5).toFixed(1);
  if (path) el("svg:path", {d: path, fill: "none", stroke: "#2ca02c", "stroke-width": 2, class: "running-best"}, svg);
  for (const r of ledger) {
    const failed = r.val_bpb === null || r.status === "crash" || r.status === "invalid";
    const y = failed ? sy(sc.strip) : sy(Math.min(r.val_bpb, sc.high));
    const colour = r.kind === "baseline" ? COLOURS.baseline : (COLOURS[r.status] || "#333");
    let mark;
    if (failed || r.status === "timeout") {
      const x = sx(r.number), s = 4;
      mark = el("svg:path", {d: `M${x - s},${y - s}L${x + s},${y + s}M${x - s},${y + s}L${x + s},${y - s}`, stroke: colour, "stroke-width": 2, class: "point " + r.status}, svg);
    } else if (r.val_bpb > sc.high) {  // worse than the range shown: a triangle on the top edge
      const x = sx(r.number), s = 4;
      mark = el("svg:path", {d: `M${x - s},${y + s}L${x + s},${y + s}L${x},${y - s}Z`, fill: colour, class: "point off-scale " + r.status}, svg);
    } else {
      const again = r.kind === "control" || r.kind === "audit";  // a kept commit measured again: a ring
      mark = el("svg:circle", {cx: sx(r.number), cy: y, r: r.improved ? 5.5 : 3.5, fill: again ? "none" : colour,
                               stroke: r.improved ? "#000" : (again ? colour : "none"), "stroke-width": again ? 1.5 : 1,
                               opacity: r.improved || r.kind === "baseline" ? 1 : 0.7, class: "point " + r.status}, svg);
    }
    el("svg:title", {}, mark, "#" + r.number + " run " + (r.run_id || "-") + " " + r.status + " (" + r.kind + ") " + fmt(r.val_bpb) + "  " + r.description);
  }
  for (let k = 0; k <= 4; k++) {
    const v = sc.low + (sc.high - sc.low) * k / 4, y = sy(v);
    el("svg:line", {x1: L, x2: W - R, y1: y, y2: y, stroke: "#f0f0f0"}, svg).parentNode.insertBefore(svg.lastChild, svg.children[1]);
    el("svg:text", {x: L - 5, y: y + 4, "text-anchor": "end", "font-size": 11}, svg, v.toFixed(4));
  }
  el("svg:text", {x: L + 4, y: sy(sc.strip) + 4, "font-size": 10, fill: "#888"}, svg, "no val_bpb");
  el("svg:text", {x: (W + L) / 2, y: H - 6, "text-anchor": "middle", "font-size": 11, fill: "#555"}, svg, "run (position in results.tsv); val_bpb, lower is better");
}

function renderLedger(ledger) {
  const body = document.querySelector("#ledger tbody");
  clear(body);
  document.getElementById("ledger-count").textContent = "(" + ledger.length + " runs, newest first)";
  for (let i = ledger.length - 1; i >= 0; i--) {
    const r = ledger[i];
    const tr = el("tr", {"data-run": r.run_id || ("row-" + r.number), class: r.improved ? "improved" : ""}, body);
    el("td", {class: "num"}, tr, String(r.number));
    const run = el("td", {}, tr);
    if (r.run_id) el("a", {href: "/runs/" + encodeURIComponent(r.run_id) + "/train.log", target: "_blank", rel: "noopener"}, run, r.run_id);
    else run.textContent = "-";
    el("span", {class: "badge " + r.status}, el("td", {}, tr), r.status);
    el("td", {}, tr, r.kind || "");
    el("code", {}, el("td", {}, tr), r.commit);
    el("td", {class: "num"}, tr, fmt(r.val_bpb));
    el("td", {class: "num"}, tr, signed(r.gain));
    el("td", {class: "num"}, tr, fmt(r.best));
    el("td", {}, tr, r.description);
  }
}

const drawn = {};  // section -> the JSON it was last drawn from: redraw only what changed
function changed(section, value) {
  const text = JSON.stringify(value);
  if (drawn[section] === text) return false;
  drawn[section] = text;
  return true;
}

function render(state) {
  if (changed("head", [state.folder, state.reference, state.error])) {
    document.getElementById("folder").textContent = state.folder + (state.reference ? " (reference-format ledger)" : "");
    const error = document.getElementById("error");
    error.hidden = !state.error;
    error.textContent = state.error || "";
  }
  if (changed("warnings", state.warnings || [])) {  // the ledger's damaged lines (the rows shown are the valid ones)
    const box = document.getElementById("warnings");
    box.hidden = !(state.warnings || []).length;
    box.textContent = (state.warnings || []).join("\n");
  }
  if (changed("summary", state.summary)) renderSummary(state);
  if (changed("current", [state.current, state.baseline_curve, state.best_curve, state.budget_s])) renderCurrent(state);
  if (changed("progress", [state.ledger, state.summary])) drawProgress(document.getElementById("progress-chart"), state.ledger, state.summary);
  if (changed("ledger", state.ledger)) renderLedger(state.ledger);
  document.body.dataset.rows = String(state.ledger.length);
}

function showQuiet(state) {  // every poll: the time since the run's last output grows while the document does not change
  const node = document.getElementById("quiet");
  const at = state && state.current ? state.current.last_output_at : null;
  if (!node) return;
  const quiet = at === null || at === undefined ? 0 : Date.now() / 1000 - at;
  node.textContent = quiet > 60 ? "no output for " + secs(quiet) + ": evaluating, or the loop was stopped" : "";
}

function setStatus(text, bad) {
  const node = document.getElementById("updated");
  node.textContent = text;
  node.className = bad ? "warn" : "muted";
}

async function poll() {
  try {
    const res = await fetch("/api/state", {cache: "no-cache"});
    if (!res.ok) throw new Error("HTTP " + res.status);
    const text = await res.text();
    if (text !== lastText) { lastState = JSON.parse(text); render(lastState); lastText = text; }
    showQuiet(lastState);
    setStatus("updated " + new Date().toLocaleTimeString() + " (every " + INTERVAL_MS / 1000 + " s)", false);
  } catch (e) {
    setStatus("cannot reach the dashboard (" + e.message + "); retrying", true);
  } finally {
    setTimeout(poll, INTERVAL_MS);
  }
}
poll();
</script>
</body></html>
"""


def render_page(interval_s: float) -> str:
    return PAGE.replace("__INTERVAL_MS__", str(max(200, int(interval_s * 1000))))
