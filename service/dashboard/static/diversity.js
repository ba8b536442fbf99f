// The dashboard's diversity block: recipe coverage, feature mix, distinct-n, nearest-neighbour
// Jaccard, openings, length and vocabulary-share histograms, rejections. Exposes window.Diversity.
(function () {
  "use strict";
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function pct(v, d) { return v === null || v === undefined ? "n/a" : (100 * v).toFixed(d === undefined ? 1 : d) + "%"; }
  function table(head, rows, id) {
    var t = el("table", { "class": "compact", id: id });
    var tr = el("tr"); head.forEach(function (h) { tr.appendChild(el("th", {}, h)); });
    var thead = el("thead"); thead.appendChild(tr); t.appendChild(thead);
    var body = el("tbody");
    rows.forEach(function (r) { var row = el("tr"); r.forEach(function (c) { row.appendChild(el("td", {}, c)); }); body.appendChild(row); });
    t.appendChild(body);
    return t;
  }
  function card(title, child, note) {
    var box = el("div", { "class": "card" });
    box.appendChild(el("h3", {}, title));
    box.appendChild(child);
    if (note) box.appendChild(el("p", { "class": "muted small" }, note));
    return box;
  }
  function words(list) { return list.map(function (w) { return w.word + " (" + w.count + ")"; }).join(", ") || "none"; }

  function render(d) {
    var box = document.getElementById("diversity");
    var empty = document.getElementById("diversity-empty");
    box.replaceChildren();
    var none = !d || !d.stories;
    empty.hidden = !none;
    if (none) return;
    var cov = d.recipe_coverage;
    box.appendChild(card("Recipe coverage", table(["Role", "Used / vocabulary", "Most used", "Least used"],
      ["verb", "noun", "adjective"].map(function (r) {
        var c = cov[r];
        return [r, c.used + " / " + c.vocabulary + " (" + pct(c.coverage) + ")", words(c.most_used), words(c.least_used)];
      }), "coverage"), d.stories + " accepted stories checked"));
    box.appendChild(card("Feature mix", table(["Feature", "Actual", "Configured"],
      d.features.map(function (f) { return [f.feature, pct(f.actual), pct(f.configured)]; }).concat([["none", pct(d.no_feature), ""]]), "feature-mix")));
    var dn = d.distinct;
    box.appendChild(card("Distinct n-grams", table(["distinct-1", "distinct-2", "distinct-3", "words / story"],
      [[pct(dn.distinct_1), pct(dn.distinct_2), pct(dn.distinct_3), d.mean_words === null ? "n/a" : d.mean_words]], "distinct"),
      "Distinct n-grams over all n-grams (HyperLogLog, about \u00b11%). Real TinyStories, 1,200 stories: 2.3% / 27.7% / 63.9%."));
    var nn = d.nearest_neighbour;
    var nnLabels = nn.edges.map(function (e, i) { return i === nn.edges.length - 1 ? "=1" : "\u2265" + e; });
    var marks = nn.edges.map(function (e) { return e >= 0.3; });
    var nnBox = el("div");
    nnBox.appendChild(Charts.bars(nnLabels, nn.counts, "nearest-neighbour Jaccard histogram", marks));
    nnBox.appendChild(table(Object.keys(nn.share_at_least).map(function (t) { return "J \u2265 " + t; }),
      [Object.keys(nn.share_at_least).map(function (t) { return pct(nn.share_at_least[t]); })], "nn-shares"));
    box.appendChild(card("Nearest-neighbour Jaccard", nnBox, "Estimated Jaccard of word 5-grams to the most similar earlier cluster root sharing an LSH band; 0 when none does. Bars at 0.3 and above are duplicates."));
    box.appendChild(card("Most frequent openings", table(["First five words", "Stories", "Share"],
      d.openings.top.map(function (o) { return [o.text, o.count, pct(o.share)]; }), "openings"), d.openings.distinct + " distinct openings"));
    var len = d.length.edges_words.map(function (e, i, a) { return i === a.length - 1 ? "\u2265" + e : e + "-" + a[i + 1]; });
    box.appendChild(card("Story length (words)", Charts.bars(len, d.length.counts, "story length histogram")));
    var oov = d.vocabulary_share.edges_oov_share;
    var vlabels = oov.map(function (e, i) { return i === oov.length - 1 ? "<" + pct(1 - e, 0) : "\u2264" + pct(1 - e, 1).replace(".0%", "%"); });
    box.appendChild(card("Vocabulary share", Charts.bars(vlabels, d.vocabulary_share.counts, "vocabulary share histogram"),
      "Share of a story's words (names aside) in the vocabulary and basic words; " + d.vocabulary_share.scored + " stories scored."));
    var rej = Object.keys(d.rejections_by_reason);
    box.appendChild(card("Rejections by check", rej.length ? table(["Check", "Stories"], rej.map(function (k) { return [k, d.rejections_by_reason[k]]; }), "div-rejections") : el("p", { "class": "muted" }, "No story rejected.")));
  }
  window.Diversity = { render: render };
})();
