"""The viewer's stylesheet and script, inlined into every page (no CDN, no network, no server)."""

from __future__ import annotations

#: Shared by the viewer and the evaluation reports.
CSS = """
:root { --bg: #f6f7f9; --fg: #1d232b; --muted: #5b6572; --card: #fff; --line: #d9dee5; --accent: #2563eb;
  --bad: #d0021b; --alpha: 0.75; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); font-size: 14px; }
header { padding: 12px 20px; background: #111827; color: #f3f4f6; }
header h1 { margin: 0 0 4px; font-size: 20px; }
header .sub { color: #cbd5e1; font-size: 13px; }
header .sub code { color: #e5e7eb; }
a { color: var(--accent); }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
h2 { font-size: 15px; margin: 18px 0 8px; }
table.data { border-collapse: collapse; background: var(--card); margin: 6px 0 16px; }
table.data th, table.data td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; }
table.data td.num, table.data th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.data tr.best td { background: #ecfdf5; font-weight: 600; }
table.data tr.absent td { color: var(--muted); }
.swatch { display: inline-block; width: 14px; height: 14px; border-radius: 3px; vertical-align: -2px;
  margin-right: 6px; border: 1px solid rgba(0,0,0,.25); }
.bar { display: inline-block; height: 10px; background: var(--accent); border-radius: 2px; vertical-align: middle; }
.note { color: var(--muted); font-size: 13px; }
.warn { color: #92400e; background: #fffbeb; border: 1px solid #fcd34d; padding: 6px 10px; border-radius: 6px; }
#app { display: flex; align-items: flex-start; }
aside { width: 270px; flex: none; padding: 10px 14px; position: sticky; top: 0; max-height: 100vh;
  overflow: auto; border-right: 1px solid var(--line); background: #fff; }
aside h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
aside label { display: block; margin: 3px 0; }
aside select, aside input[type=search] { width: 100%; padding: 4px; }
main { flex: 1; padding: 10px 16px; min-width: 0; }
#legend { list-style: none; padding: 0; margin: 0; }
#legend li { display: flex; align-items: center; padding: 2px 4px; border-radius: 4px; cursor: pointer; }
#legend li:hover { background: #eef2ff; }
#legend li.on { background: #dbeafe; font-weight: 600; }
#legend li.off { opacity: .45; }
#legend .count { margin-left: auto; color: var(--muted); font-size: 12px; }
#status { margin: 4px 0 8px; color: var(--muted); }
.pager { display: flex; gap: 4px; flex-wrap: wrap; margin: 6px 0; }
.pager button { border: 1px solid var(--line); background: #fff; padding: 2px 8px; border-radius: 4px;
  cursor: pointer; }
.pager button.cur { background: var(--accent); color: #fff; border-color: var(--accent); }
#grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(var(--thumb, 256px), 1fr)); gap: 10px; }
.card { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 6px; overflow: hidden;
  cursor: pointer; }
.card:hover { box-shadow: 0 2px 8px rgba(0,0,0,.15); }
.card.failed { border-color: var(--bad); }
.stack { position: relative; width: 100%; background: #444; }
.stack img { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; }
.stack img.lay { opacity: var(--alpha); image-rendering: pixelated; }
.stack .fail { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center;
  color: #fff; background: #7f1d1d; padding: 8px; text-align: center; font-size: 12px; }
figcaption { padding: 4px 6px; font-size: 12px; }
figcaption .name { display: block; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.badge { display: inline-block; padding: 0 5px; margin: 2px 3px 0 0; border-radius: 8px; background: #eef2f7;
  font-variant-numeric: tabular-nums; }
.badge.doubt { background: #fef3c7; }
.badge.err { background: #fee2e2; }
.badge.kind { background: #e0e7ff; }
body.hide-o .toggle img.o, body.hide-p .toggle img.p, body.hide-g .toggle img.g, body.hide-e .toggle img.e,
body.hide-i .toggle img.i, body.hide-k .toggle img.k { visibility: hidden; }
#modal { position: fixed; inset: 0; background: rgba(0,0,0,.6); display: flex; align-items: center;
  justify-content: center; z-index: 10; }
#modal[hidden] { display: none; }
#modal .box { background: #fff; width: min(1400px, 96vw); max-height: 94vh; overflow: auto; border-radius: 8px;
  padding: 12px 16px; display: flex; gap: 16px; }
#modal .view { flex: 2; min-width: 0; }
#modal .info { flex: 1; min-width: 260px; font-size: 13px; }
#modal .close { float: right; font-size: 20px; border: 0; background: none; cursor: pointer; }
.kv td:first-child { color: var(--muted); padding-right: 10px; vertical-align: top; white-space: nowrap; }
.kv td { word-break: break-all; }
.panels { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 10px; }
.panel { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 6px; }
.panel h3 { margin: 2px 0 6px; font-size: 13px; }
.panel img { width: 100%; display: block; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 12px; }
.tile { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
.tile .big { font-size: 26px; font-weight: 600; font-variant-numeric: tabular-nums; }
.wrap { padding: 10px 20px 40px; }
"""

#: The viewer's script: reads ``window.SEGPIPE`` (data/summary.js), pages of details on demand.
JS = r"""
(function () {
  "use strict";
  var S = window.SEGPIPE;
  var app = document.getElementById("status");
  if (!S) { app.textContent = "data/summary.js did not load: keep index.html beside its data/ and img/ folders.";
    return; }
  var items = unpack(S.items), classes = S.classes, byId = {};
  function unpack(cols) {  // columns -> one object per item (summary.js stores columns: see html.columns)
    if (Array.isArray(cols)) cols = { fr: [] };
    var keys = Object.keys(cols), n = keys.length ? cols[keys[0]].length : 0, out = new Array(n);
    for (var i = 0; i < n; i++) {
      var it = {};
      for (var k = 0; k < keys.length; k++) { var v = cols[keys[k]][i]; if (v !== null) it[keys[k]] = v; }
      it._q = ((it.n || "") + " " + (it.t || "")).toLowerCase();
      (it.fr || []).forEach(function (f) {
        if (!f.b) f.b = "img/" + String(f.pg).padStart(5, "0") + "/" + String(f.pi).padStart(4, "0");
      });
      out[i] = it;
    }
    return out;
  }
  classes.forEach(function (c) { byId[c.id] = c; });
  var state = { sort: "name", q: "", minDoubt: 0, minErr: 0, kind: "", failed: false, cls: [], page: 0,
    size: 100, alpha: 0.75, hide: {} };
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else if (k.slice(0, 2) === "on") e.addEventListener(k.slice(2), attrs[k]);
      else e.setAttribute(k, attrs[k]);
    });
    (kids || []).forEach(function (k) {
      if (k) e.appendChild(typeof k === "string" ? document.createTextNode(k) : k);
    });
    return e;
  }
  function rgb(c) { return "rgb(" + c.color.join(",") + ")"; }
  function pct(v) { return v === null || v === undefined ? "n/a" : (100 * v).toFixed(1) + "%"; }
  function num(v, d) { return v === null || v === undefined ? "n/a" : v.toFixed(d === undefined ? 3 : d); }
  var SORTS = {
    name: { label: "name", key: function (it) { return it.n; }, dir: 1, text: true },
    doubt: { label: "doubt (most first)", key: function (it) { return it.d; }, dir: -1 },
    margin: { label: "margin (smallest first)", key: function (it) { return it.m; }, dir: 1 },
    error: { label: "error (most first)", key: function (it) { return it.e; }, dir: -1 },
    iou: { label: "IoU (lowest first)", key: function (it) { return it.u; }, dir: 1 },
    instances: { label: "instances (most first)", key: function (it) { return it.ni; }, dir: -1 },
    score: { label: "mean score (lowest first)", key: function (it) { return it.s; }, dir: 1 },
    size: { label: "size (largest first)", key: function (it) { return it.w * it.h; }, dir: -1 }
  };
  function has(it, cid) { return (it.c && it.c.indexOf(cid) >= 0) || (it.gc && it.gc.indexOf(cid) >= 0); }
  function filtered() {
    var q = state.q.trim().toLowerCase(), out = [];
    for (var i = 0; i < items.length; i++) {
      var it = items[i];
      if (q && it._q.indexOf(q) < 0) continue;
      if (state.minDoubt > 0 && !(it.d >= state.minDoubt)) continue;
      if (state.minErr > 0 && !(it.e >= state.minErr)) continue;
      if (state.kind && (it.kind || "image") !== state.kind) continue;
      if (state.failed && !it.f) continue;
      var ok = true;
      for (var j = 0; j < state.cls.length; j++) if (!has(it, state.cls[j])) { ok = false; break; }
      if (ok) out.push(i);
    }
    var s = SORTS[state.sort] || SORTS.name;
    out.sort(function (a, b) {
      var x = s.key(items[a]), y = s.key(items[b]);
      var nx = x === null || x === undefined, ny = y === null || y === undefined;
      if (nx || ny) return nx && ny ? a - b : (nx ? 1 : -1);
      if (s.text) return x < y ? -1 : x > y ? 1 : a - b;
      return x === y ? a - b : (x - y) * s.dir;
    });
    return out;
  }
  function src(fr, layer, tag) { return fr.b + "." + layer + "." + tag + "." + (layer === "o" ? "jpg" : "png"); }
  function stack(it, fr, tag, only) {
    var d = el("div", { cls: "stack" + (only === undefined ? " toggle" : "") });
    d.style.aspectRatio = (fr.w || it.w || 4) + " / " + (fr.h || it.h || 3);
    if (fr.f || it.f) { d.appendChild(el("div", { cls: "fail", text: "could not be shown: " + (fr.f || it.f) }));
      return d; }
    d.appendChild(el("img", { cls: "o", loading: "lazy", src: src(fr, "o", tag), alt: it.n }));
    (fr.L || "").split("").forEach(function (l) {
      if (only !== undefined && only.indexOf(l) < 0) return;
      d.appendChild(el("img", { cls: "lay " + l, loading: "lazy", src: src(fr, l, tag), alt: S.roles[l] || l }));
    });
    return d;
  }
  function badges(it) {
    var b = [];
    if (it.kind && it.kind !== "image") b.push(el("span", { cls: "badge kind", text: it.kind +
      (it.kind === "volume" ? " · " + it.fr.length + " slices" : "") }));
    if (it.d !== null && it.d !== undefined) b.push(el("span", { cls: "badge doubt", title: "mean entropy",
      text: "doubt " + num(it.d, 3) }));
    if (it.e !== null && it.e !== undefined) b.push(el("span", { cls: "badge err", title: "pixels wrong",
      text: "error " + pct(it.e) }));
    if (it.u !== null && it.u !== undefined) b.push(el("span", { cls: "badge", text: "IoU " + num(it.u, 3) }));
    if (it.ni) b.push(el("span", { cls: "badge", text: it.ni + " obj" + (it.s !== null && it.s !== undefined ?
      " · score " + num(it.s, 2) : "") }));
    return b;
  }
  function card(i) {
    var it = items[i], cur = Math.floor(it.fr.length / 2);
    var f = el("figure", { cls: "card" + (it.f ? " failed" : ""), "data-i": String(i), "data-name": it.n,
      "data-doubt": it.d === null || it.d === undefined ? "" : String(it.d) });
    var st = stack(it, it.fr[cur], "t");
    f.appendChild(st);
    var cap = el("figcaption", null, [el("span", { cls: "name", title: it.n, text: it.n })].concat(badges(it)));
    if (it.fr.length > 1) {
      var z = el("input", { type: "range", min: "0", max: String(it.fr.length - 1), value: String(cur),
        cls: "z", title: "slice" });
      z.addEventListener("click", function (e) { e.stopPropagation(); });
      z.addEventListener("input", function (e) { e.stopPropagation();
        f.replaceChild(stack(it, it.fr[+z.value], "t"), f.firstChild); });
      cap.appendChild(z);
    }
    f.appendChild(cap);
    f.addEventListener("click", function () { openDetail(i, it.fr.length > 1 ? +(cap.querySelector(".z") || {}).value
      || cur : 0); });
    return f;
  }
  function pager(box, total) {
    box.textContent = "";
    var n = Math.max(1, Math.ceil(total / state.size));
    function btn(p, label) {
      return el("button", { cls: p === state.page ? "cur" : "", text: label || String(p + 1),
        onclick: function () { state.page = p; render(); window.scrollTo(0, 0); } });
    }
    if (n <= 1) return;
    if (state.page > 0) box.appendChild(btn(state.page - 1, "‹ prev"));
    var pages = {}; [0, n - 1].forEach(function (p) { pages[p] = 1; });
    for (var p = Math.max(0, state.page - 3); p <= Math.min(n - 1, state.page + 3); p++) pages[p] = 1;
    Object.keys(pages).map(Number).sort(function (a, b) { return a - b; }).forEach(function (p, k, arr) {
      if (k && p - arr[k - 1] > 1) box.appendChild(el("span", { text: "…" }));
      box.appendChild(btn(p));
    });
    if (state.page < n - 1) box.appendChild(btn(state.page + 1, "next ›"));
  }
  function render() {
    var order = filtered(), total = order.length;
    var pages = Math.max(1, Math.ceil(total / state.size));
    if (state.page >= pages) state.page = pages - 1;
    var a = state.page * state.size, b = Math.min(total, a + state.size);
    var grid = document.getElementById("grid");
    grid.textContent = "";
    var frag = document.createDocumentFragment();
    for (var k = a; k < b; k++) frag.appendChild(card(order[k]));
    grid.appendChild(frag);
    app.textContent = total ? "showing " + (a + 1) + "–" + b + " of " + total + " (" + items.length + " in all), " +
      "sorted by " + (SORTS[state.sort] || SORTS.name).label : "nothing matches the filters (" + items.length +
      " in all)";
    pager(document.getElementById("pager"), total);
    pager(document.getElementById("pager2"), total);
    document.querySelectorAll("#legend li").forEach(function (li) {
      var on = state.cls.indexOf(+li.getAttribute("data-class")) >= 0;
      li.className = on ? "on" : "";
    });
    writeHash();
  }
  function writeHash() {
    var h = "sort=" + state.sort + (state.page ? "&page=" + (state.page + 1) : "") +
      (state.size !== 100 ? "&size=" + state.size : "") +
      (state.q ? "&q=" + encodeURIComponent(state.q) : "") + (state.cls.length ? "&class=" + state.cls.join(",") : "");
    if (location.hash.slice(1) !== h) history.replaceState(null, "", "#" + h);
  }
  function readHash() {
    location.hash.slice(1).split("&").forEach(function (kv) {
      var p = kv.split("="), k = p[0], v = decodeURIComponent(p[1] || "");
      if (k === "sort" && SORTS[v]) state.sort = v;
      else if (k === "page") state.page = Math.max(0, (parseInt(v, 10) || 1) - 1);
      else if (k === "q") state.q = v;
      else if (k === "class") state.cls = v.split(",").filter(Boolean).map(Number);
      else if (k === "size" && +v > 0) state.size = Math.min(1000, +v);
    });
  }
  // ---- details: data/page-NNNNN.js calls segpipeDetail(page, rows) when loaded
  var pages = {}, waiting = {};
  window.segpipeDetail = function (i, rows) { pages[i] = rows; (waiting[i] || []).forEach(function (f) { f(rows); });
    delete waiting[i]; };
  function loadPage(i, cb) {
    if (pages[i]) return cb(pages[i]);
    (waiting[i] = waiting[i] || []).push(cb);
    if (waiting[i].length > 1) return;
    var s = document.createElement("script");
    s.src = "data/page-" + String(i).padStart(5, "0") + ".js";
    s.onerror = function () { cb(null); };
    document.head.appendChild(s);
  }
  function kv(rows) {
    return el("table", { cls: "kv" }, rows.map(function (r) {
      return el("tr", null, [el("td", { text: r[0] }), el("td", null, [typeof r[1] === "string" ? r[1] : r[1]])]);
    }));
  }
  function classTable(d) {
    var ids = {}; Object.keys(d.classes || {}).concat(Object.keys(d.gt_classes || {})).forEach(function (k) {
      ids[k] = 1; });
    var keys = Object.keys(ids).map(Number).sort(function (a, b) { return a - b; });
    if (!keys.length) return null;
    var head = ["class", S.roles.p]; if (d.gt_classes) head.push("ground truth", "IoU");
    var t = el("table", { cls: "data" }, [el("tr", null, head.map(function (h, k) {
      return el("th", { cls: k ? "num" : "", text: h }); }))]);
    keys.forEach(function (k) {
      var c = byId[k] || { name: String(k), color: [128, 128, 128] };
      var cells = [el("td", null, [el("span", { cls: "swatch", style: "background:" + rgb(c) }), c.name]),
        el("td", { cls: "num", text: pct((d.classes || {})[k] || 0) })];
      if (d.gt_classes) cells.push(el("td", { cls: "num", text: pct(d.gt_classes[k] || 0) }),
        el("td", { cls: "num", text: num((d.iou || {})[k]) }));
      t.appendChild(el("tr", null, cells));
    });
    return t;
  }
  function openDetail(i, frame) {
    var it = items[i], fr = it.fr[frame || 0], m = document.getElementById("modal");
    var view = m.querySelector(".view"), info = m.querySelector(".info");
    view.textContent = ""; info.textContent = "";
    var tag = S.sizes.l ? "l" : "t";
    view.appendChild(el("h2", { text: it.n + (it.fr.length > 1 ? " · slice z=" + fr.z : "") }));
    if ((fr.L || "").indexOf("g") >= 0) {
      // with ground truth: side by side, each panel with its own layer (the toggles apply to the grid)
      var panels = el("div", { cls: "panels" });
      [["", "photo"], ["pik", S.roles.p], ["g", "ground truth"], ["e", "error (red: differs)"]].forEach(function (p) {
        if (p[0] === "e" && (fr.L || "").indexOf("e") < 0) return;
        panels.appendChild(el("div", { cls: "panel" }, [el("h3", { text: p[1] }), stack(it, fr, tag, p[0])]));
      });
      view.appendChild(panels);
    } else view.appendChild(stack(it, fr, tag));
    if (it.kind === "scene" && S.sizes) {
      view.appendChild(el("h2", { text: "centre at full resolution" }));
      view.appendChild(stack(it, { b: fr.b + ".crop", L: "p", w: 1, h: 1 }, S.sizes.l ? "l" : "t"));
    }
    info.appendChild(el("button", { cls: "close", text: "×", title: "close (Esc)", onclick: closeDetail }));
    info.appendChild(el("div", null, badges(it)));
    info.appendChild(el("p", { cls: "note", text: "loading details…" }));
    m.hidden = false;
    loadPage(fr.pg, function (rows) {
      var note = info.querySelector("p.note"); if (note) info.removeChild(note);
      var d = rows && rows[fr.pi];
      if (!d) { info.appendChild(el("p", { cls: "warn", text: "details not found (data/page file missing)" }));
        return; }
      if (d.failed) info.appendChild(el("p", { cls: "warn", text: d.failed }));
      var facts = [["file", d.file], ["size", d.width + " × " + d.height]];
      if (d.gt_file) facts.push(["ground truth", d.gt_file]);
      if (d.gt_note) facts.push(["note", d.gt_note]);
      if (d.doubt) facts.push(["mean entropy", num(d.doubt.entropy)], ["mean margin", num(d.doubt.margin)],
        ["pixels with margin < 0.2", pct(d.doubt.low_margin)]);
      Object.keys(d.meta || {}).forEach(function (k) {
        var v = d.meta[k]; facts.push([k, typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)]); });
      info.appendChild(kv(facts));
      var ct = classTable(d); if (ct) { info.appendChild(el("h2", { text: "classes (share of pixels)" }));
        info.appendChild(ct); }
      if (d.instances && d.instances.length) {
        info.appendChild(el("h2", { text: d.instances.length + " objects" }));
        var t = el("table", { cls: "data" }, [el("tr", null, ["class", "score", "box x, y, w, h"].map(function (h) {
          return el("th", { text: h }); }))]);
        d.instances.forEach(function (o) {
          var c = byId[o.category] || { name: String(o.category), color: [128, 128, 128] };
          t.appendChild(el("tr", null, [el("td", null, [el("span", { cls: "swatch", style: "background:" + rgb(c) }),
            c.name]), el("td", { cls: "num", text: o.score === null ? "—" : num(o.score, 2) }),
            el("td", { text: o.box ? o.box.join(", ") : "—" })]));
        });
        info.appendChild(t);
      }
    });
  }
  function closeDetail() { document.getElementById("modal").hidden = true; }
  // ---- controls
  function setup() {
    document.title = S.title + " · segpipe view";
    document.getElementById("title").textContent = S.title;
    var sub = document.getElementById("sub");
    sub.appendChild(el("span", null, [items.length + " items (" + S.images + " images) from ",
      el("code", { text: S.source.path }), " (" + S.source.format + ")"]));
    if (S.gt) sub.appendChild(el("span", null, [" · ground truth ", el("code", { text: S.gt.path }),
      " (" + S.gt.format + ")"]));
    if (S.failed) sub.appendChild(el("span", { text: " · " + S.failed + " could not be shown" }));
    var sel = document.getElementById("sort");
    Object.keys(SORTS).forEach(function (k) { sel.appendChild(el("option", { value: k, text: SORTS[k].label })); });
    sel.value = state.sort;
    sel.addEventListener("change", function () { state.sort = sel.value; state.page = 0; render(); });
    var q = document.getElementById("q"); q.value = state.q;
    q.addEventListener("input", function () { state.q = q.value; state.page = 0; render(); });
    [["minDoubt", "fd", "fdv", 1], ["minErr", "fe", "fev", 100]].forEach(function (a) {
      var r = document.getElementById(a[1]), v = document.getElementById(a[2]);
      r.addEventListener("input", function () { state[a[0]] = +r.value; state.page = 0;
        v.textContent = a[3] === 100 ? (100 * r.value).toFixed(0) + "%" : (+r.value).toFixed(2); render(); });
    });
    var kind = document.getElementById("kind");
    kind.addEventListener("change", function () { state.kind = kind.value; state.page = 0; render(); });
    document.getElementById("failed").addEventListener("change", function (e) { state.failed = e.target.checked;
      state.page = 0; render(); });
    var size = document.getElementById("size");
    if ([50, 100, 200, 500].indexOf(state.size) < 0) size.appendChild(el("option", { text: String(state.size) }));
    size.value = String(state.size);
    size.addEventListener("change", function () { state.size = +size.value; state.page = 0; render(); });
    var present = {}; items.forEach(function (it) { (it.L || "").split("").concat(it.fr.map(function (f) {
      return f.L || ""; }).join("").split("")).forEach(function (l) { if (l) present[l] = 1; }); });
    var lays = document.getElementById("layers");
    [["o", "photo"]].concat(Object.keys(S.roles).map(function (k) { return [k, S.roles[k]]; })).forEach(function (l) {
      if (l[0] !== "o" && !present[l[0]]) return;
      var cb = el("input", { type: "checkbox", "data-layer": l[0] });
      // one class layer at a time reads best: the ground truth and the error map are off until asked for
      cb.checked = l[0] !== "e" && l[0] !== "g";
      if (!cb.checked) document.body.classList.add("hide-" + l[0]);
      cb.addEventListener("change", function () { document.body.classList.toggle("hide-" + l[0], !cb.checked); });
      lays.appendChild(el("label", null, [cb, " " + l[1]]));
    });
    var op = document.getElementById("alpha");
    op.addEventListener("input", function () { document.documentElement.style.setProperty("--alpha", op.value); });
    var counts = {}; items.forEach(function (it) { var seen = {}; (it.c || []).concat(it.gc || []).forEach(
      function (c) { if (!seen[c]) { seen[c] = 1; counts[c] = (counts[c] || 0) + 1; } }); });
    var lg = document.getElementById("legend");
    classes.forEach(function (c) {
      lg.appendChild(el("li", { "data-class": String(c.id), title: "show only items with " + c.name,
        onclick: function () { var k = state.cls.indexOf(c.id); if (k >= 0) state.cls.splice(k, 1);
          else state.cls.push(c.id); state.page = 0; render(); } },
        [el("span", { cls: "swatch", style: "background:" + rgb(c) }), el("span", { text: c.name }),
          el("span", { cls: "count", text: String(counts[c.id] || 0) })]));
    });
    document.documentElement.style.setProperty("--thumb", Math.min(S.sizes.t, 320) + "px");
    var m = document.getElementById("modal");
    m.addEventListener("click", function (e) { if (e.target === m) closeDetail(); });
    document.addEventListener("keydown", function (e) { if (e.key === "Escape") closeDetail(); });
    if (S.problems && S.problems.length) {
      var w = document.getElementById("problems");
      w.hidden = false;
      w.textContent = S.problems.length + " problem(s): " + S.problems.slice(0, 3).map(function (p) {
        return p.file + ": " + p.problem; }).join("; ") + (S.problems.length > 3 ? " …" : "");
    }
  }
  readHash();
  setup();
  render();
})();
"""
