// Inline SVG charts of the dashboard: line charts with axis ticks, labelled limit lines and
// values on hover; bar charts for histograms. No dependencies. Exposes window.Charts.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "n/a";
    var a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e3) return (v / 1e3).toFixed(a >= 1e4 ? 0 : 1) + "k";
    return Number(v).toLocaleString(undefined, { maximumFractionDigits: a < 10 ? 1 : 0 });
  }
  // 0, then round steps up to at least `max`: ticks a reader can use.
  function niceTicks(max) {
    if (!(max > 0)) max = 1;
    var step = Math.pow(10, Math.floor(Math.log10(max / 4)));
    [1, 2, 2.5, 5, 10].some(function (m) { if (max / (step * m) <= 4) { step = step * m; return true; } return false; });
    var ticks = [];
    for (var v = 0; v < max + step * 0.999; v += step) ticks.push(v);
    return ticks;
  }
  function clock(iso) { return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); }
  var tip = null;
  function showTip(ev, text) {
    tip = tip || document.getElementById("tooltip");
    if (!tip) return;
    tip.textContent = text;
    tip.hidden = false;
    tip.style.left = Math.min(ev.pageX + 12, window.scrollX + document.documentElement.clientWidth - 200) + "px";
    tip.style.top = ev.pageY + 12 + "px";
  }
  function hideTip() { if (tip) tip.hidden = true; }

  // points: [{t, <key>}], per-minute values; limit: a number or null; unit: "req/min".
  function line(points, key, limit, unit, label) {
    var w = 440, h = 150, left = 44, right = 8, top = 10, bottom = 22;
    var values = points.map(function (p) { return p[key]; });
    var peak = Math.max.apply(null, values.concat([0]));
    var ticks = niceTicks(Math.max(peak, limit || 0) * 1.05);
    var max = ticks[ticks.length - 1];
    var root = svg("svg", { viewBox: "0 0 " + w + " " + h, "class": "chart", role: "img", "aria-label": label });
    var x = function (i) { return left + (w - left - right) * i / Math.max(points.length - 1, 1); };
    var y = function (v) { return h - bottom - (h - top - bottom) * v / max; };
    ticks.forEach(function (t) {
      root.appendChild(svg("line", { x1: left, y1: y(t), x2: w - right, y2: y(t), "class": t ? "grid" : "axis" }));
      root.appendChild(svg("text", { x: left - 4, y: y(t) + 3, "class": "tick y" }, fmt(t)));
    });
    [0, Math.floor((points.length - 1) / 2), points.length - 1].forEach(function (i, n) {
      if (!points[i]) return;
      root.appendChild(svg("text", { x: x(i), y: h - 6, "class": "tick x" + ["", " mid", " end"][n] }, clock(points[i].t)));
    });
    if (limit) {
      root.appendChild(svg("line", { x1: left, y1: y(limit), x2: w - right, y2: y(limit), "class": "limit" }));
      root.appendChild(svg("text", { x: w - right - 2, y: y(limit) - 3, "class": "limit-label" }, "limit " + fmt(limit) + " " + unit));
    }
    var path = points.map(function (p, i) { return (i ? "L" : "M") + x(i).toFixed(1) + " " + y(p[key]).toFixed(1); }).join(" ");
    root.appendChild(svg("path", { d: path, "class": "series" }));
    var slot = (w - left - right) / Math.max(points.length, 1);
    points.forEach(function (p, i) {
      if (p[key] > 0) root.appendChild(svg("circle", { cx: x(i).toFixed(1), cy: y(p[key]).toFixed(1), r: 2, "class": "point" }));
      var text = clock(p.t) + ": " + fmt(p[key]) + " " + unit + (limit ? " (" + (100 * p[key] / limit).toFixed(0) + "% of limit)" : "");
      var hit = svg("rect", { x: (x(i) - slot / 2).toFixed(1), y: top, width: slot.toFixed(1), height: h - top - bottom, "class": "hit", "data-value": p[key] });
      hit.appendChild(svg("title", {}, text));
      hit.addEventListener("mousemove", function (ev) { showTip(ev, text); });
      hit.addEventListener("mouseleave", hideTip);
      root.appendChild(hit);
    });
    return root;
  }

  // labels and counts of a histogram; values shown above the bars and on hover.
  function bars(labels, counts, label, marks) {
    var w = 440, h = 150, pad = 6, bw = (w - 2 * pad) / Math.max(counts.length, 1);
    var max = Math.max(1, Math.max.apply(null, counts));
    var total = counts.reduce(function (a, b) { return a + b; }, 0);
    var root = svg("svg", { viewBox: "0 0 " + w + " " + h, "class": "chart", role: "img", "aria-label": label });
    counts.forEach(function (c, i) {
      var bh = (h - 40) * c / max;
      var share = total ? (100 * c / total).toFixed(1) + "%" : "";
      var rect = svg("rect", { x: pad + i * bw + 2, y: h - 22 - bh, width: Math.max(bw - 4, 1), height: bh, "class": (marks && marks[i] ? "bar-fill mark" : "bar-fill") + (c ? " point" : "") });
      rect.appendChild(svg("title", {}, labels[i] + ": " + fmt(c) + (share ? " (" + share + ")" : "")));
      root.appendChild(rect);
      root.appendChild(svg("text", { x: pad + i * bw + bw / 2, y: h - 8, "class": "tick x mid" }, labels[i]));
      if (c) root.appendChild(svg("text", { x: pad + i * bw + bw / 2, y: h - 26 - bh, "class": "tick x mid" }, fmt(c)));
    });
    return root;
  }
  window.Charts = { line: line, bars: bars, fmt: fmt };
})();
