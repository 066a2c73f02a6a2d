"""The one dashboard page: server-rendered grid, then refreshed by a little inline JS.

No build step and no external assets (works offline). Cell colours:
green = closed on time, red = closed late, grey = open, amber = closable
(watermark passed end + grace) but not closed yet; a purple ring with "!"
marks an audit mismatch, a red underline an open bucket past its SLO.

With several DCs (``[dc] domains``) a panel under the grid has a row per type and DC:
whether the DC answers, messages and seconds behind, the transfer delay of the newest
message stored, missing/repeated DC sequences, and a "!" breach mark when the delay
exceeds ``dc.max_transfer_delay_secs``. Without DCs the page has no panel.
"""

from __future__ import annotations

import html
import json
from typing import Any

_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .3em; }
.meta { color: #666; margin-bottom: 1em; }
table.grid { border-collapse: separate; border-spacing: 3px; }
table.grid th { font-weight: normal; color: #555; font-size: 11px; text-align: left; }
table.grid th.col { writing-mode: vertical-rl; transform: rotate(180deg); height: 4.5em;
  white-space: nowrap; }
.legend { margin-bottom: .8em; }
td.type { padding-right: .8em; white-space: nowrap; }
td.type .stats { color: #666; font-size: 11px; }
td.cell { width: 22px; height: 22px; border-radius: 3px; cursor: pointer; text-align: center;
  font-weight: bold; color: #fff; box-sizing: border-box; }
td.cell.on_time { background: rgb(46, 157, 79); }
td.cell.late { background: rgb(214, 69, 69); }
td.cell.open { background: rgb(184, 184, 184); }
td.cell.closable { background: rgb(240, 160, 32); }
td.cell.none { background: transparent; cursor: default; }
td.cell.mismatch { outline: 3px solid rgb(123, 44, 191); outline-offset: -1px; }
td.cell.mismatch::after { content: "!"; }
td.cell.overdue { border-bottom: 4px solid rgb(214, 69, 69); }
td.cell.selected { box-shadow: 0 0 0 2px #000; }
.legend span { display: inline-block; margin-right: 1em; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
  vertical-align: middle; margin-right: .3em; }
h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
table.dcs { border-collapse: collapse; }
table.dcs th, table.dcs td { padding: 2px 8px; text-align: right; white-space: nowrap; }
table.dcs th { font-weight: normal; color: #555; font-size: 12px; }
table.dcs td.name { text-align: left; }
tr.dc.ok td.status { color: rgb(46, 157, 79); }
tr.dc.late td.status, tr.dc.mismatch td.status { color: rgb(214, 69, 69); font-weight: bold; }
tr.dc.unreachable td.status { color: rgb(240, 160, 32); font-weight: bold; }
tr.dc.breach td.status::after { content: " !"; }
#details { margin-top: 1em; padding: .8em; border: 1px solid #ddd; border-radius: 4px;
  max-width: 60em; white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12px; }
"""

_SCRIPT = """
const REFRESH_MS = __REFRESH_MS__;
let grid = __GRID__;
let types = __TYPES__;
let dcs = __DCS__;
let selected = null;

function fmt(v, digits) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number" && digits !== undefined) return v.toFixed(digits);
  return String(v);
}

function cellTitle(c) {
  const lines = [c.start_iso + "  " + c.state + "  (" + c.verdict + ")",
    "accepted " + c.accepted + ", in stream " + c.in_stream + ", delivered " + fmt(c.delivered),
    "invalid " + c.invalid + ", duplicates removed " + fmt(c.duplicates_removed) +
      ", skewed " + fmt(c.skewed),
    "completeness " + fmt(c.completeness_percent, 2) + "%",
    c.close_delay_secs !== null
      ? "closed after " + fmt(c.close_delay_secs, 1) + "s (SLO " + c.slo_secs + "s)"
      : "open for " + fmt(c.open_for_secs, 1) + "s (SLO " + c.slo_secs + "s)"];
  for (const p of c.problems) lines.push(p.kind + ": " + p.message);
  return lines.join("\\n");
}

function details(type, c) {
  const files = c.files.map(f => "  " + f.name + "  " + f.rows + " rows, " + f.bytes + " bytes");
  return type + "\\n" + cellTitle(c) + (files.length ? "\\nfiles:\\n" + files.join("\\n") : "");
}

function render() {
  const stats = {};
  for (const t of types) stats[t.type] = t;
  const head = ["<tr><th></th>"];
  for (const iso of grid.starts_iso) head.push('<th class="col">' + iso.slice(11, 19) + "</th>");
  head.push("</tr>");
  const rows = [];
  for (const row of grid.rows) {
    const s = stats[row.type] || {};
    const cells = ['<td class="type"><b>' + row.type + '</b><div class="stats">lag ' +
      fmt(s.lag_secs, 1) + "s · pending " + fmt(s.pending) + " · " +
      fmt(s.events_per_sec_last_bucket, 1) + " ev/s</div></td>"];
    row.cells.forEach((c, i) => {
      if (!c) { cells.push('<td class="cell none"></td>'); return; }
      const cls = ["cell", c.state];
      if (c.mismatch) cls.push("mismatch");
      if (c.overdue) cls.push("overdue");
      const key = row.type + "." + c.start;
      if (key === selected) cls.push("selected");
      cells.push('<td class="' + cls.join(" ") + '" data-type="' + row.type + '" data-start="' +
        c.start + '" data-key="' + key + '" title="' + cellTitle(c).replace(/"/g, "&quot;") +
        '"></td>');
    });
    rows.push('<tr data-type="' + row.type + '">' + cells.join("") + "</tr>");
  }
  document.getElementById("grid").innerHTML = head.join("") + rows.join("");
  document.getElementById("updated").textContent = grid.generated_at;
  if (selected) showSelected();
}

function showSelected() {
  for (const row of grid.rows) for (const c of row.cells)
    if (c && row.type + "." + c.start === selected) {
      document.getElementById("details").textContent = details(row.type, c);
      return;
    }
}

function dcStatus(r) {
  if (r.status === "late") return "LATE (> " + r.max_transfer_delay_secs + "s)";
  return r.status.toUpperCase();
}

function renderDcs() {
  if (dcs === null) return;
  const esc = s => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/"/g, "&quot;");
  const rows = ["<tr><th>type</th><th>dc</th><th>answers</th><th>stored</th><th>dc last</th>" +
    "<th>behind</th><th>behind s</th><th>transfer s</th><th>missing</th><th>repeated</th>" +
    "<th>status</th></tr>"];
  for (const r of dcs.rows) {
    const cls = ["dc", r.status];
    if (r.delay_breached) cls.push("breach");
    const title = r.missing_ranges.length ? "missing DC sequences " +
      JSON.stringify(r.missing_ranges) : "";
    rows.push('<tr class="' + cls.join(" ") + '" data-type="' + esc(r.event_type) +
      '" data-dc="' + esc(r.domain) + '" title="' + esc(title) + '">' +
      '<td class="name">' + esc(r.event_type) + '</td><td class="name">' + esc(r.domain) +
      "</td><td>" + (r.reachable ? "yes" : "no") + "</td><td>" + r.stored + "</td><td>" +
      fmt(r.dc_last_seq) + '</td><td class="behind">' + fmt(r.behind_messages) +
      '</td><td class="behind_s">' + fmt(r.behind_secs, 1) + "</td><td>" +
      fmt(r.last_transfer_secs, 1) + "</td><td>" + r.missing + "</td><td>" + r.repeated +
      '</td><td class="status">' + esc(dcStatus(r)) + "</td></tr>");
  }
  document.getElementById("dcs").innerHTML = rows.join("");
  document.getElementById("dcs-updated").textContent = dcs.generated_at;
}

document.getElementById("grid").addEventListener("click", ev => {
  const td = ev.target.closest("td.cell[data-key]");
  if (!td) return;
  selected = td.dataset.key;
  render();
});

async function refresh() {
  try {
    const asks = [fetch("api/buckets"), fetch("api/types")];
    if (dcs !== null) asks.push(fetch("api/dcs"));
    const [g, t, d] = await Promise.all(asks);
    if (g.ok && t.ok) { grid = await g.json(); types = await t.json(); render(); }
    if (d && d.ok) { dcs = await d.json(); renderDcs(); }
    const ok = g.ok && t.ok && (!d || d.ok);
    document.getElementById("status").textContent = ok ? "" : " (refresh failed)";
  } catch (e) {
    document.getElementById("status").textContent = " (refresh failed: " + e + ")";
  }
}

render();
renderDcs();
setInterval(refresh, REFRESH_MS);
"""


def _embed(doc: Any) -> str:
    # Inside <script>, "</" would end the element; JSON allows "<\\/".
    return json.dumps(doc).replace("</", "<\\/")


def render_page(
    grid: dict[str, Any],
    types: list[dict[str, Any]],
    refresh_secs: float,
    *,
    dcs: dict[str, Any] | None = None,
) -> str:
    """The page; ``dcs`` is the per-DC panel's document (None: one DC, no panel)."""
    script = (
        _SCRIPT.replace("__REFRESH_MS__", str(int(refresh_secs * 1000)))
        .replace("__GRID__", _embed(grid))
        .replace("__TYPES__", _embed(types))
        .replace("__DCS__", _embed(dcs))
    )
    dc_panel = ""
    if dcs is not None:
        dc_panel = (
            '<h2>Data centres</h2>\n<div class="meta">how far behind each DC\'s source is, '
            "from what this region has stored · limit "
            f"{dcs['max_transfer_delay_secs']:g}s · updated "
            '<span id="dcs-updated"></span> · JSON: <a href="api/dcs">dcs</a></div>\n'
            '<table class="dcs" id="dcs"></table>\n'
        )
    width = grid["bucket_width_secs"]
    legend = "".join(
        f'<span><i style="background:{color}"></i>{html.escape(label)}</span>'
        for color, label in (
            ("rgb(46, 157, 79)", "closed on time"),
            ("rgb(214, 69, 69)", "closed late"),
            ("rgb(184, 184, 184)", "open"),
            ("rgb(240, 160, 32)", "closable, not closed"),
            ("rgb(123, 44, 191)", "audit mismatch (!)"),
        )
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Courier buckets</title>
<style>{_STYLE}</style></head>
<body>
<h1>Courier buckets</h1>
<div class="meta">bucket width {width}s · updated <span id="updated"></span><span id="status"></span>
 · JSON: <a href="api/types">types</a>, <a href="api/buckets">buckets</a>,
 <a href="api/audit">audit</a></div>
<div class="legend">{legend}</div>
<table class="grid" id="grid"></table>
<div id="details">Click a bucket for its counts, delay and files.</div>
{dc_panel}<script>{script}</script>
</body></html>
"""
