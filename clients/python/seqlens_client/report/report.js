// seqlens explanation report: draws every panel as inline SVG from the JSON in #seqlens-data.
// No network, no libraries. Panels whose data is absent get a note saying what to ask for.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("seqlens-data").textContent);
  var SVG = "http://www.w3.org/2000/svg";
  var PALETTE = ["#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#1098ad", "#f08c00", "#5c940d",
                 "#862e9c", "#495057", "#d6336c", "#0b7285"];
  // W: the width of the panel being drawn, so that SVG text keeps its CSS size (set by body()).
  var W = 640, H = 220, M = { l: 48, r: 14, t: 12, b: 34 };
  var state = { method: D.methods.length ? D.methods[0].name : null };

  // --- DOM helpers ------------------------------------------------------------------
  function el(tag, attrs, parent, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function sv(tag, attrs, parent, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function body(id) {
    var b = document.querySelector("#panel-" + id + " .body");
    b.textContent = "";
    W = Math.max(320, Math.floor(b.clientWidth));
    return b;
  }
  function note(parent, text) { return el("p", { "class": "note" }, parent, text); }
  function fmt(v, digits) {
    if (v === null || v === undefined) return "–";
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(digits === undefined ? 2 : digits);
    return v.toFixed(digits === undefined ? 3 : digits);
  }
  function method() {
    for (var i = 0; i < D.methods.length; i++) if (D.methods[i].name === state.method) return D.methods[i];
    return null;
  }
  function absMax(values) {
    var m = 0;
    values.forEach(function (v) { if (v !== null && Math.abs(v) > m) m = Math.abs(v); });
    return m || 1;
  }
  function flat(rows) { return [].concat.apply([], rows); }
  // Diverging colour: negative blue, zero white, positive red; |v| / max sets the strength.
  function divColor(v, max) {
    if (v === null || v === undefined) return "rgb(238,238,238)";
    var s = Math.max(-1, Math.min(1, v / max));
    var c = s >= 0 ? [202, 0, 32] : [33, 102, 172];
    var a = Math.abs(s);
    return "rgb(" + c.map(function (x) { return Math.round(255 + (x - 255) * a); }).join(",") + ")";
  }
  function stepLabels() {
    if (D.tokens) return D.tokens.map(function (t) { return t.label || t.text; });
    var out = [];
    for (var i = 0; i < D.length; i++) out.push(String(i));
    return out;
  }
  function legend(parent, items) {
    var lg = el("div", { "class": "legend" }, parent);
    items.forEach(function (it) {
      var s = el("span", {}, lg);
      var k = el("span", { "class": "key" }, s);
      k.style.background = it.color;
      if (it.dash) k.style.background = "repeating-linear-gradient(90deg," + it.color + " 0 4px,transparent 4px 7px)";
      s.appendChild(document.createTextNode(it.name));
    });
  }

  // --- charts -----------------------------------------------------------------------
  function frame(parent, opts) {
    var h = opts.height || H;
    var svg = sv("svg", { "class": "chart", viewBox: "0 0 " + W + " " + h, role: "img" }, parent);
    if (opts.label) sv("title", {}, svg, opts.label);
    return { svg: svg, h: h, iw: W - M.l - M.r, ih: h - M.t - M.b };
  }
  function yScale(lo, hi, f) {
    if (lo === hi) { lo -= 1; hi += 1; }
    return function (v) { return M.t + f.ih * (1 - (v - lo) / (hi - lo)); };
  }
  function axes(f, x0, x1, lo, hi, xTicks, xLabel, yLabel) {
    var y = yScale(lo, hi, f);
    [lo, (lo + hi) / 2, hi].forEach(function (v) {
      sv("line", { "class": "grid", x1: M.l, x2: M.l + f.iw, y1: y(v), y2: y(v) }, f.svg);
      sv("text", { x: M.l - 5, y: y(v) + 4, "text-anchor": "end" }, f.svg, fmt(v, 2));
    });
    sv("line", { "class": "axis", x1: M.l, x2: M.l + f.iw, y1: M.t + f.ih, y2: M.t + f.ih }, f.svg);
    sv("line", { "class": "axis", x1: M.l, x2: M.l, y1: M.t, y2: M.t + f.ih }, f.svg);
    (xTicks || []).forEach(function (t) {
      sv("text", { x: t.x, y: M.t + f.ih + 14, "text-anchor": "middle" }, f.svg, t.text);
    });
    if (xLabel) sv("text", { x: M.l + f.iw / 2, y: f.h - 3, "text-anchor": "middle" }, f.svg, xLabel);
    if (yLabel) sv("text", { x: 10, y: M.t + f.ih / 2, transform: "rotate(-90 10 " + (M.t + f.ih / 2) + ")",
                            "text-anchor": "middle" }, f.svg, yLabel);
    return y;
  }
  function ticks(n, xOf, labels) {
    var every = Math.max(1, Math.ceil(n / Math.max(4, Math.floor((W - M.l - M.r) / 46)))), out = [];
    for (var i = 0; i < n; i += every) out.push({ x: xOf(i), text: labels ? String(labels[i]).slice(0, 8) : String(i) });
    return out;
  }
  // series: [{name, values, color, dash, width}] over a shared x index 0..n-1
  function lineChart(parent, opts) {
    var f = frame(parent, opts);
    var n = Math.max.apply(null, opts.series.map(function (s) { return s.values.length; }));
    var all = flat(opts.series.map(function (s) { return s.values; })).filter(function (v) { return v !== null; });
    var lo = opts.yMin !== undefined ? opts.yMin : Math.min.apply(null, all.concat([0]));
    var hi = opts.yMax !== undefined ? opts.yMax : Math.max.apply(null, all);
    var xs = opts.xs || null;
    var x0 = xs ? xs[0] : 0, x1 = xs ? xs[xs.length - 1] : Math.max(1, n - 1);
    var xOf = function (i) { var v = xs ? xs[i] : i; return M.l + f.iw * (v - x0) / ((x1 - x0) || 1); };
    if (opts.bands) {  // per-step background colours (attribution over a time series)
      var bw = f.iw / Math.max(1, n - 1);
      opts.bands.forEach(function (c, i) {
        var left = Math.max(M.l, xOf(i) - bw / 2), right = Math.min(M.l + f.iw, xOf(i) + bw / 2 + 0.5);
        sv("rect", { x: left, y: M.t, width: Math.max(0, right - left), height: f.ih, fill: c, "fill-opacity": 0.55,
                     "class": "band" }, f.svg);
      });
    }
    var y = axes(f, x0, x1, lo, hi, opts.xTicks || ticks(n, xOf, opts.xLabels || xs), opts.xLabel, opts.yLabel);
    opts.series.forEach(function (s) {
      var d = "", pen = false;
      s.values.forEach(function (v, i) {
        if (v === null) { pen = false; return; }
        d += (pen ? "L" : "M") + xOf(i).toFixed(1) + "," + y(v).toFixed(1);
        pen = true;
      });
      var p = sv("path", { d: d, fill: "none", stroke: s.color, "stroke-width": s.width || 1.6,
                           "class": "series" }, f.svg);
      if (s.dash) p.setAttribute("stroke-dasharray", "5 3");
      if (s.points) s.values.forEach(function (v, i) {
        if (v !== null) sv("circle", { cx: xOf(i), cy: y(v), r: 2.6, fill: s.color }, f.svg);
      });
      sv("title", {}, p, s.name);
    });
    if (opts.series.length > 1 || opts.legend) legend(parent, opts.series);
    return f.svg;
  }
  function barChart(parent, opts) {  // signed bars, one per step
    var f = frame(parent, opts);
    var n = opts.values.length, max = absMax(opts.values);
    var bw = f.iw / Math.max(1, n);
    var y = axes(f, 0, n, -max, max, ticks(n, function (i) { return M.l + bw * (i + 0.5); }, opts.xLabels),
                 opts.xLabel, opts.yLabel);
    opts.values.forEach(function (v, i) {
      if (v === null) return;
      var r = sv("rect", { x: M.l + bw * i + bw * 0.1, width: Math.max(0.5, bw * 0.8), y: Math.min(y(v), y(0)),
                           height: Math.max(0.5, Math.abs(y(v) - y(0))), fill: divColor(v, max), "class": "bar",
                           stroke: "rgba(0,0,0,.25)", "stroke-width": 0.5 }, f.svg);
      sv("title", {}, r, (opts.xLabels ? opts.xLabels[i] + ": " : "t=" + i + ": ") + fmt(v));
    });
    return f.svg;
  }
  function hbars(parent, labels, values, highlight) {  // probabilities per class
    var rowH = 20, h = M.t + labels.length * rowH + 10, lw = 120;
    var svg = sv("svg", { "class": "chart", viewBox: "0 0 " + W + " " + h }, parent);
    var iw = W - lw - 70;
    labels.forEach(function (lab, i) {
      var yy = M.t + i * rowH;
      sv("text", { x: lw - 6, y: yy + 13, "text-anchor": "end" }, svg, String(lab).slice(0, 18));
      sv("rect", { x: lw, y: yy + 3, height: rowH - 6, width: Math.max(1, iw * values[i]), rx: 2, "class": "bar",
                   fill: i === highlight ? "#3b5bdb" : "#adb5bd" }, svg);
      sv("text", { x: lw + iw * values[i] + 6, y: yy + 13 }, svg, fmt(values[i], 3));
    });
    return svg;
  }
  // rows: [R][C] values; rowLabels: R; colLabels: C; marks: optional [[r, c]] drawn as dots
  function heatmap(parent, rows, rowLabels, colLabels, marks) {
    var longest = Math.max.apply(null, rowLabels.map(function (l) { return String(l).length; }));
    var R = rows.length, C = rows[0].length, lw = Math.min(150, 12 + 6.5 * longest);
    var cell = Math.max(2, Math.min(36, (W - lw - 10) / C));
    var ch = Math.max(4, Math.min(16, 380 / R)), h = M.t + R * ch + 34;
    var svg = sv("svg", { "class": "chart heatmap", viewBox: "0 0 " + W + " " + h }, parent);
    var max = absMax(flat(rows));
    rows.forEach(function (row, r) {
      if (ch >= 8 || r % 2 === 0) sv("text", { x: lw - 4, y: M.t + r * ch + ch * 0.75, "text-anchor": "end" },
                                     svg, rowLabels[r]);
      row.forEach(function (v, c) {
        var rect = sv("rect", { x: lw + c * cell, y: M.t + r * ch, width: cell + 0.3, height: ch + 0.3,
                                fill: divColor(v, max), "class": "cell" }, svg);
        sv("title", {}, rect, rowLabels[r] + " @ " + colLabels[c] + ": " + fmt(v));
      });
    });
    (marks || []).forEach(function (m) {
      sv("circle", { cx: lw + m[1] * cell + cell / 2, cy: M.t + m[0] * ch + ch / 2,
                     r: Math.max(1, Math.min(cell, ch) * 0.18), fill: "#111" }, svg);
    });
    var every = Math.max(1, Math.ceil(46 / cell));  // labels at least 46 px apart
    for (var c = 0; c < C; c += every) {
      sv("text", { x: lw + c * cell + cell / 2, y: M.t + R * ch + 14, "text-anchor": "middle" }, svg,
         String(colLabels[c]).slice(0, 8));
    }
    return svg;
  }
  function scatter(parent, groups, xLabel, yLabel) {  // groups: [{name, color, points: [[x, y]]}] in [0,1]^2
    var f = frame(parent, { height: 300 });
    var side = Math.min(f.iw, f.ih), x = function (v) { return M.l + side * v; };
    var y = function (v) { return M.t + side * (1 - v); };
    [0, 0.5, 1].forEach(function (v) {
      sv("line", { "class": "grid", x1: x(0), x2: x(1), y1: y(v), y2: y(v) }, f.svg);
      sv("text", { x: x(0) - 5, y: y(v) + 4, "text-anchor": "end" }, f.svg, String(v));
      sv("text", { x: x(v), y: y(0) + 14, "text-anchor": "middle" }, f.svg, String(v));
    });
    sv("line", { "class": "axis", x1: x(0), x2: x(0), y1: y(0), y2: y(1) }, f.svg);
    sv("line", { "class": "axis", x1: x(0), x2: x(1), y1: y(0), y2: y(0) }, f.svg);
    sv("line", { x1: x(0), y1: y(1), x2: x(1), y2: y(0), stroke: "#ced4da", "stroke-dasharray": "4 3" }, f.svg);
    sv("text", { x: x(0.5), y: y(0) + 28, "text-anchor": "middle" }, f.svg, xLabel);
    sv("text", { x: 10, y: y(0.5), transform: "rotate(-90 10 " + y(0.5) + ")", "text-anchor": "middle" }, f.svg,
       yLabel);
    groups.forEach(function (g) {
      g.points.forEach(function (p, i) {
        var c = sv("circle", { cx: x(p[0]), cy: y(p[1]), r: 3.2, fill: g.color, "fill-opacity": 0.65,
                               "class": "dot" }, f.svg);
        sv("title", {}, c, g.name + " unit " + i + ": left " + fmt(p[0], 2) + ", right " + fmt(p[1], 2));
      });
    });
    legend(parent, groups);
    return f.svg;
  }

  // --- panels -----------------------------------------------------------------------
  function renderSwitcher() {
    var sw = document.getElementById("method-switcher");
    sw.textContent = "";
    D.methods.forEach(function (m) {
      var b = el("button", { type: "button", "data-method": m.name, "class": m.name === state.method ? "active" : "" },
                 sw, m.name.replace(/_/g, " "));
      b.addEventListener("click", function () { select(m.name); });
    });
  }
  function renderAttribution() {
    var b = body("attribution"), m = method();
    if (!m) { note(b, "No attributions in this explanation: ask for methods=[...] (CLI: --method NAME) when explaining."); return; }
    if (m.warning) el("div", { "class": "unconverged", role: "alert" }, b, "⚠ " + m.warning);
    var info = [m.name.replace(/_/g, " ")];
    if (m.n_steps) info.push(m.n_steps + (m.name === "integrated_gradients" ? " steps" : " samples"));
    if (m.integral) info.push((m.converged ? "converged" : "NOT converged") + ", δ = " + fmt(m.convergence_delta) +
                             (m.relative_delta !== null ? " (" + fmt(100 * m.relative_delta, 2) + "% of f(x)−f(b))" : ""));
    info.push("f(x) = " + fmt(m.target_at_input) + ", f(baseline) = " + fmt(m.target_at_baseline));
    if (m.seconds) info.push(fmt(m.seconds * 1000, 1) + " ms");
    el("div", { "class": "method-info" }, b, info.join(" · "));
    var max = absMax(m.scores), scale = el("div", { "class": "legend" }, b);
    scale.appendChild(document.createTextNode("against the target"));
    el("span", { "class": "scale" }, scale);
    scale.appendChild(document.createTextNode("for the target (±" + fmt(max) + ")"));
    if (D.tokens) {
      var box = el("div", { "class": "tokens" }, b), pos = 0;
      D.tokens.forEach(function (t, i) {
        if (D.text && t.start >= pos) box.appendChild(document.createTextNode(D.text.slice(pos, t.start)));
        else if (i > 0) box.appendChild(document.createTextNode(" "));
        var s = el("span", { "class": t.special ? "tok special" : "tok", "data-score": String(m.scores[i]) },
                   box, t.inline !== undefined ? t.inline : t.text);
        s.style.backgroundColor = divColor(m.scores[i], max);
        if (Math.abs(m.scores[i]) > 0.6 * max) s.style.color = "#fff";
        s.title = (t.label || t.text) + ": " + fmt(m.scores[i]);
        if (D.target && D.prediction.step_labels.length && D.target.timestep === i) s.classList.add("target");
        if (t.end > pos) pos = t.end;
      });
      if (D.text && pos < D.text.length) box.appendChild(document.createTextNode(D.text.slice(pos)));
    } else if (D.features) {
      var F = D.features, bands = m.scores.map(function (v) { return divColor(v, max); });
      var series = F.values.slice(0, F.shown).map(function (vals, i) {
        return { name: F.names[i], values: vals, color: PALETTE[i % PALETTE.length] };
      });
      h3(b, "Input series, background coloured by attribution per timestep");
      lineChart(b, { series: series, bands: bands, xLabel: "timestep", legend: true });
      if (m.feature_scores) {
        h3(b, "Attribution per feature and timestep");
        var rows = F.names.map(function (_, f) { return m.feature_scores.map(function (r) { return r[f]; }); });
        heatmap(b, rows, F.names.map(function (n) { return n.slice(0, 20); }), stepLabels());
      }
    }
    h3(b, "Attribution per " + (D.tokens ? "token" : "timestep"));
    barChart(b, { values: m.scores, xLabels: stepLabels(), yLabel: "score", height: 170 });
  }
  function h3(parent, text) { return el("h3", {}, parent, text); }
  function renderPrediction() {
    var b = body("prediction"), p = D.prediction;
    if (p.probabilities) {
      hbars(b, p.labels, p.probabilities, p.label_index);
    } else if (p.step_labels && p.step_labels.length) {
      var t = el("table", { "class": "kv" }, b);
      var lab = stepLabels();
      p.step_labels.forEach(function (s, i) {
        var tr = el("tr", {}, t);
        el("td", {}, tr, lab[i]);
        el("td", {}, tr, s);
      });
    } else if (p.forecast) {
      lineChart(b, { series: [{ name: "forecast", values: p.forecast, color: PALETTE[0], points: true }],
                     xLabel: "horizon step", yLabel: "value", height: 180 });
    } else {
      note(b, "The prediction carries no scores.");
    }
  }
  function layersWith(key) { return D.layers.filter(function (l) { return l[key]; }); }
  function noState(b, what) {
    note(b, D.layers.length ? "The state summary has no " + what + " for this model or request."
                            : "No state summary: explain with state=True (CLI: --state) to see " + what + ".");
  }
  function renderPrefix() {
    var b = body("prefix"), ls = layersWith("prefix");
    if (!ls.length) { noState(b, "prefix predictions (unidirectional models only)"); return; }
    var l = ls[ls.length - 1], vals = l.prefix.values, C = vals[0].length;
    var names = D.prediction.labels && D.prediction.labels.length === C ? D.prediction.labels : null;
    var series = [];
    for (var c = 0; c < Math.min(C, PALETTE.length); c++) {
      var isTarget = c === D.target.class_index;
      series.push({ name: names ? names[c] : "output " + c, color: PALETTE[c % PALETTE.length],
                    width: isTarget ? 3 : 1.4, values: vals.map(function (r) { return r[c]; }) });
    }
    el("div", { "class": "method-info" }, b, "What the model would output if the sequence ended at each step (" +
       l.name + (l.prefix.space === "probability" ? ", softmax" : ", raw outputs") + ")");
    lineChart(b, { series: series, xLabels: stepLabels(), yLabel: l.prefix.space, legend: true,
                   yMin: l.prefix.space === "probability" ? 0 : undefined,
                   yMax: l.prefix.space === "probability" ? 1 : undefined });
  }
  function renderNorms() {
    var b = body("norms"), ls = layersWith("state_norm");
    if (!ls.length) { noState(b, "state norms"); return; }
    var series = [];
    ls.forEach(function (l, i) {
      var c = PALETTE[i % PALETTE.length];
      series.push({ name: "‖h‖ " + l.name, values: l.state_norm, color: c });
      if (l.delta_norm) series.push({ name: "‖Δh‖ " + l.name, values: l.delta_norm, color: c, dash: true });
    });
    lineChart(b, { series: series, xLabels: stepLabels(), yLabel: "L2 norm", legend: true });
  }
  function renderGates() {
    var b = body("gates"), ls = layersWith("gate_mean");
    if (!ls.length) { noState(b, "gate means (LSTM and GRU only)"); return; }
    ls.forEach(function (l) {
      h3(b, l.name + " (" + l.cell + ")");
      lineChart(b, { series: l.gate_mean.map(function (g, i) {
        return { name: l.gate_names[i] || "gate " + i, values: g, color: PALETTE[i % PALETTE.length] };
      }), xLabels: stepLabels(), yLabel: "mean over units", legend: true, height: 170 });
    });
  }
  function renderUnits() {
    var b = body("units"), ls = layersWith("heatmap");
    if (!ls.length) {
      note(b, D.layers.length ? "Hidden states were not returned: explain with StateOptions(include_hidden=True) (CLI: --hidden)."
                              : "No state summary: explain with state=StateOptions(include_hidden=True) (CLI: --hidden).");
      return;
    }
    ls.forEach(function (l) {
      var hm = l.heatmap, marks = [];
      if (l.top_units) l.top_units.forEach(function (units, t) {
        units.forEach(function (u) { var r = hm.units.indexOf(u); if (r >= 0) marks.push([r, t]); });
      });
      h3(b, l.name + ": h_t of " + hm.units.length + " units" + (l.top_units ? " (dots: top units by |Δh_t|)" : ""));
      heatmap(b, hm.values, hm.units.map(function (u) { return "unit " + u; }), stepLabels(), marks);
    });
  }
  function renderSaturation() {
    var b = body("saturation"), ls = layersWith("saturation");
    if (!ls.length) { noState(b, "gate saturation (LSTM and GRU only)"); return; }
    el("div", { "class": "method-info" }, b, "Per unit: fraction of steps with the gate < 0.1 (left-saturated) " +
       "and > 0.9 (right-saturated), as in Karpathy et al. 2015.");
    ls.forEach(function (l) {
      h3(b, l.name);
      scatter(b, l.saturation.map(function (units, g) {
        return { name: l.gate_names[g] || "gate " + g, color: PALETTE[g % PALETTE.length], points: units };
      }), "fraction left-saturated", "fraction right-saturated");
    });
  }
  function renderFaithfulness() {
    var b = body("faithfulness"), m = method();
    var any = D.methods.some(function (x) { return x.faithfulness; });
    if (!any) { note(b, "No faithfulness scores: explain with faithfulness=True (CLI: --faithfulness)."); return; }
    if (!m || !m.faithfulness) { note(b, "No faithfulness scores for " + (m ? m.name : "this method") + "."); return; }
    var f = m.faithfulness;
    el("div", { "class": "method-info" }, b, m.name.replace(/_/g, " ") + ": AOPC comprehensiveness " +
       fmt(f.aopc_comprehensiveness) + " (random " + fmt(f.random_aopc_comprehensiveness) + "), sufficiency " +
       fmt(f.aopc_sufficiency) + " (random " + fmt(f.random_aopc_sufficiency) + ")");
    var series = [
      { name: "comprehensiveness", values: f.comprehensiveness, color: PALETTE[1], points: true },
      { name: "sufficiency", values: f.sufficiency, color: PALETTE[0], points: true }];
    if (f.random_comprehensiveness.length) series.push(
      { name: "random comprehensiveness", values: f.random_comprehensiveness, color: PALETTE[1], dash: true });
    if (f.random_sufficiency.length) series.push(
      { name: "random sufficiency", values: f.random_sufficiency, color: PALETTE[0], dash: true });
    lineChart(b, { series: series, xs: f.top_k_percent, xLabel: "top-k % of steps removed (comp.) / kept (suff.)",
                   yLabel: "drop in target", legend: true, height: 200 });
  }
  function renderTimings() {
    var b = body("timings"), keys = Object.keys(D.timings || {});
    if (!keys.length) { note(b, "The server reported no stage timings."); return; }
    var t = el("table", { "class": "kv" }, b);
    keys.forEach(function (k) {
      var tr = el("tr", {}, t);
      el("td", {}, tr, k);
      el("td", { "class": "num" }, tr, fmt(D.timings[k] * 1000, 2) + " ms");
    });
  }
  function select(name) {
    state.method = name;
    document.body.setAttribute("data-method", name || "");
    renderSwitcher();
    renderAttribution();
    renderFaithfulness();
  }

  function renderAll() {
    select(state.method);
    renderPrediction();
    renderPrefix();
    renderNorms();
    renderGates();
    renderUnits();
    renderSaturation();
    renderTimings();
  }
  renderAll();
  var pending = null;  // charts are drawn at the panel width: redraw when it changes
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(renderAll, 150);
  });
  document.body.setAttribute("data-rendered", "true");
})();
