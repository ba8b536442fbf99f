// TinyStories factory dashboard: renders the JSON sections and polls them every few seconds.
// No dependencies; charts are inline SVG.
(function () {
  "use strict";
  var POLL_MS = 5000;
  var SECTIONS = ["overview", "rates", "cost", "health", "jobs", "diversity", "providers", "batches"];
  var windowSelect = document.getElementById("window");
  var scopeSelect = document.getElementById("diversity-scope");
  windowSelect.value = window.localStorage.getItem("tinystories-window") || "job";
  var failedSince = null, lastOk = new Date();
  var state = JSON.parse(document.getElementById("initial-data").textContent);

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function usd(v) { return v === null || v === undefined ? "n/a" : "$" + Number(v).toFixed(v >= 100 ? 2 : 4); }
  function num(v, d) { return v === null || v === undefined ? "n/a" : Number(v).toLocaleString(undefined, { maximumFractionDigits: d === undefined ? 1 : d }); }
  function pct(v) { return v === null || v === undefined ? "n/a" : (100 * v).toFixed(1) + "%"; }
  function secs(v) {
    if (v === null || v === undefined) return "n/a";
    if (v < 1) return (v * 1000).toFixed(0) + " ms";
    if (v < 120) return v.toFixed(1) + " s";
    if (v < 7200) return (v / 60).toFixed(1) + " min";
    return (v / 3600).toFixed(1) + " h";
  }
  function setText(id, value) { var n = document.getElementById(id); if (n) n.textContent = value; }
  function fillBody(tableId, rows) {
    var body = document.querySelector("#" + tableId + " tbody");
    body.replaceChildren.apply(body, rows.map(function (cells) {
      var tr = el("tr");
      cells.forEach(function (c) { tr.appendChild(c instanceof Node ? wrapCell(c) : el("td", {}, c)); });
      return tr;
    }));
  }
  function wrapCell(node) { var td = el("td"); td.appendChild(node); return td; }

  function renderOverview(o) {
    document.getElementById("simulator-banner").hidden = !o.simulator;
    setText("provider-name", o.provider);
    setText("kpi-pending", num(o.queue.pending, 0));
    setText("kpi-running", num(o.queue.running, 0));
    setText("kpi-workers", num(o.workers_alive, 0));
    setText("kpi-inflight", num(o.in_flight, 0));
    setText("kpi-accepted", num(o.stories.accepted, 0));
    setText("kpi-rejected", num(o.stories.rejected, 0));
    setText("kpi-failed", num(o.stories.failed, 0));
    fillBody("workers", o.workers.map(function (w) {
      return [w.id, el("span", { "class": w.alive ? "status s-running" : "status s-failed" }, w.alive ? "alive" : w.status),
        secs(w.heartbeat_age_s), num(w.in_flight, 0), num(w.concurrency, 0)];
    }));
  }

  function renderRates(r) {
    var box = document.getElementById("rates");
    box.replaceChildren();
    var win = r.window || {};
    setText("window-label", "(" + (win.label || "") + ", " + (win.minutes ? secs(win.minutes * 60) : "") +
      (win.bucket_minutes > 1 ? ", " + win.bucket_minutes + "-minute points" : "") + ")");
    var busy = r.models.filter(function (m) { return m.window.requests > 0; });
    if (!busy.length) { box.appendChild(el("p", { "class": "empty" }, "No requests in this window.")); return; }
    busy.forEach(function (m) {
      var card = el("div", { "class": "model", "data-model": m.model });
      card.appendChild(el("h3", {}, m.model));
      var charts = el("div", { "class": "charts" });
      [["requests", m.limits.rpm, "req/min", "requests per minute"], ["tokens", m.limits.tpm, "tokens/min", "tokens per minute"]].forEach(function (c) {
        var fig = el("figure");
        fig.appendChild(Charts.line(m.series, c[0], c[1], c[2], m.model + " " + c[3]));
        fig.appendChild(el("figcaption", {}, c[3] + (c[1] ? " (red dashed line: limit)" : " (no limit configured)")));
        charts.appendChild(fig);
      });
      card.appendChild(charts);
      var t = el("table", { "class": "compact" });
      t.innerHTML = "<thead><tr><th></th><th>window average</th><th>busiest minute</th><th>since start</th><th>limit</th><th>use (window)</th></tr></thead>";
      var body = el("tbody");
      [["req/min", "requests_per_minute", "peak_requests_per_minute", m.limits.rpm, "use_requests"],
       ["tokens/min", "tokens_per_minute", "peak_tokens_per_minute", m.limits.tpm, "use_tokens"]].forEach(function (row) {
        var tr = el("tr");
        tr.appendChild(el("th", {}, row[0]));
        tr.appendChild(el("td", {}, num(m.window[row[1]])));
        tr.appendChild(el("td", {}, num(m.window[row[2]], 0)));
        tr.appendChild(el("td", {}, num(m.since_start[row[1]])));
        tr.appendChild(el("td", {}, row[3] ? num(row[3], 0) : "none"));
        tr.appendChild(el("td", { "class": "use" }, row[3] ? pct(m.window[row[4]]) : "n/a"));
        body.appendChild(tr);
      });
      t.appendChild(body); card.appendChild(t); box.appendChild(card);
    });
  }

  function renderCost(c) {
    // Words, not $0.0000, where there is nothing to count yet.
    setText("kpi-spent", c.jobs ? usd(c.spent_usd) : "no jobs yet");
    setText("kpi-per1k", c.cost_per_1000_accepted === null ? "no stories yet" : usd(c.cost_per_1000_accepted));
    setText("kpi-budget", c.budget_left_usd === null ? "no active job" : usd(c.budget_left_usd));
    setText("kpi-projected", c.projected_to_finish_usd === null ? "no active job" : usd(c.projected_to_finish_usd));
    fillBody("cost-models", c.per_model.map(function (m) {
      return [m.model, usd(m.cost_usd), num(m.accepted, 0), usd(m.cost_per_1000_accepted)];
    }));
  }

  // Bucket bound first (what the histogram knows), then the interpolated estimate.
  function quantile(lat, p) {
    var est = lat[p + "_s"], bound = lat[p + "_le_s"];
    if (est === null || est === undefined) return "n/a";
    var head = bound === null ? "> " + secs(est) : "\u2264 " + secs(bound);
    return head + " (est. " + secs(est) + ")";
  }

  function renderHealth(h) {
    var a = h.last_hour, b = h.since_start;
    var rows = [
      ["Requests", num(a.requests, 0), num(b.requests, 0)],
      ["Errors", num(a.errors, 0) + " (" + pct(a.error_rate) + ")", num(b.errors, 0) + " (" + pct(b.error_rate) + ")"],
      ["429s", num(a.rate_limited, 0), num(b.rate_limited, 0)],
      ["Retries", num(a.retries, 0), num(b.retries, 0)],
      ["Failed tasks", num(a.tasks_failed, 0), num(b.tasks_failed, 0)],
      ["Acceptance", pct(a.acceptance_rate), pct(b.acceptance_rate)],
      ["Duplicate rate", pct(a.duplicate_rate), pct(b.duplicate_rate)],
      ["Latency p50", quantile(a.latency, "p50"), quantile(b.latency, "p50")],
      ["Latency p90", quantile(a.latency, "p90"), quantile(b.latency, "p90")],
      ["Latency p99", quantile(a.latency, "p99"), quantile(b.latency, "p99")],
      ["Latency mean", secs(a.latency.mean_s), secs(b.latency.mean_s)]
    ];
    fillBody("health", rows);
    function byKey(x, y) {
      var keys = Object.keys(Object.assign({}, x, y)).sort();
      if (!keys.length) return [["none", "0", "0"]];
      return keys.map(function (k) { return [k, num(x[k] || 0, 0), num(y[k] || 0, 0)]; });
    }
    fillBody("errors", byKey(a.errors_by_class, b.errors_by_class));
    fillBody("rejections", byKey(a.rejections_by_reason, b.rejections_by_reason));
    var labels = b.latency.buckets_le_s.map(function (le, i) {
      return le === null ? ">" + b.latency.buckets_le_s[i - 1] + "s" : "\u2264" + le + "s";
    });
    var box = document.getElementById("latency-chart");
    box.replaceChildren(b.requests ? Charts.bars(labels, b.latency.counts, "latency histogram") : el("p", { "class": "empty" }, "No requests yet."));
  }

  function renderJobs(j) {
    var projected = {};
    (state.cost ? state.cost.per_job : []).forEach(function (p) { projected[p.id] = p; });
    var body = document.getElementById("jobs-body");
    body.replaceChildren.apply(body, j.jobs.map(function (job) {
      var tr = el("tr", { "data-job": job.id, "data-status": job.status });
      var name = el("td"); name.appendChild(el("span", { "class": "name" }, job.name || job.id.slice(0, 8)));
      name.appendChild(el("br")); name.appendChild(el("code", {}, job.id.slice(0, 8)));
      if (job.vocabulary_label) {
        name.appendChild(el("br"));
        name.appendChild(el("span", { "class": "muted small vocabulary", title: "custom vocabulary (sha256 " + job.vocabulary.sha256 + ")" }, job.vocabulary_label));
      }
      tr.appendChild(name);
      tr.appendChild(wrapCell(el("span", { "class": "status s-" + job.status }, job.status)));
      var prog = el("td"); var bar = el("div", { "class": "bar" });
      bar.appendChild(el("div", { style: "width:" + (100 * job.progress).toFixed(1) + "%" }));
      prog.appendChild(bar); prog.appendChild(document.createTextNode(num(job.done, 0) + " / " + num(job.n_stories, 0)));
      tr.appendChild(prog);
      var eta = job.status === "completed" ? "done" : job.actions.length === 0 ? "\u2014"
        : job.status === "paused" ? "paused" : secs(job.eta_seconds);
      tr.appendChild(el("td", { "class": "opt" }, eta));
      tr.appendChild(el("td", {}, job.requests_per_minute === null ? "\u2014" : num(job.requests_per_minute)));
      tr.appendChild(el("td", {}, usd(job.spent_usd) + " / " + usd(job.budget_usd)));
      var p = projected[job.id];
      tr.appendChild(el("td", { "class": "opt" }, p ? usd(p.projected_total_usd) : "n/a"));
      var actions = el("td");
      job.actions.forEach(function (a) {
        actions.appendChild(el("button", { type: "button", "class": "action a-" + a, "data-action": a, "data-job": job.id }, a));
      });
      tr.appendChild(actions);
      return tr;
    }));
    document.getElementById("jobs-empty").hidden = j.jobs.length > 0;
  }

  function renderDiversity(d) { window.Diversity.render(d); }

  // Pool members as the live workers see them; the panel shows only when pools are configured.
  var STATE_CLASS = { closed: "s-completed", half_open: "s-paused", open: "s-failed" };
  function renderProviders(p) {
    document.getElementById("providers-section").hidden = !p.pools.length;
    setText("providers-note", "(" + num(p.workers, 0) + " live worker" + (p.workers === 1 ? "" : "s") +
      "; counts since each worker started)");
    var rows = [];
    p.pools.forEach(function (pool) {
      pool.members.forEach(function (m, i) {
        var state = m.state.replace("_", "-");
        if (m.state !== "closed") state += " on " + m[m.state === "open" ? "workers_open" : "workers_half_open"] + "/" + m.workers;
        if (m.state === "open" && m.retry_in_s) state += ", probe in " + secs(m.retry_in_s);
        var limits = [m.rpm ? num(m.rpm, 0) + " rpm" : "", m.tpm ? num(m.tpm, 0) + " tpm" : ""].filter(Boolean).join(", ");
        var name = el("span", {}, m.name); name.title = m.base_url || "";
        rows.push([i === 0 ? pool.model + " (" + pool.healthy + "/" + pool.members.length + " healthy)" : "", name,
          el("span", { "class": "status " + (STATE_CLASS[m.state] || ""), "data-state": m.state }, state),
          num(m.requests, 0), num(m.errors, 0), num(m.requests_per_minute), num(m.tokens_per_minute, 0),
          limits || "none", m.last_error || "\u2014"]);
      });
    });
    fillBody("providers", rows);
  }

  function renderBatches(b) {
    document.getElementById("batches-section").hidden = !b.jobs.length;
    var t = b.totals;
    setText("batches-totals", num(t.batches, 0) + " batches for " + num(t.jobs, 0) + " job(s): " +
      num(t.in_progress, 0) + " in progress, " + num(t.completed, 0) + " completed, " + num(t.failed, 0) +
      " failed; saved " + usd(t.saved_usd) + " vs online (" + usd(t.cost_usd) + " instead of " + usd(t.online_cost_usd) + ")");
    fillBody("batches", b.jobs.map(function (j) {
      return [j.name || j.id.slice(0, 8), el("span", { "class": "status s-" + j.status }, j.status), num(j.batches, 0),
        num(j.preparing, 0), num(j.in_progress, 0), num(j.completed, 0), num(j.failed, 0), num(j.resubmitted_tasks, 0),
        usd(j.cost_usd), usd(j.online_cost_usd), usd(j.saved_usd),
        Object.keys(j.members).map(function (m) { return m + " " + num(j.members[m], 0); }).join(", ") || "\u2014"];
    }));
  }

  var RENDER = { overview: renderOverview, rates: renderRates, cost: renderCost, health: renderHealth, jobs: renderJobs,
    diversity: renderDiversity, providers: renderProviders, batches: renderBatches };

  function query(s) {
    if (s === "rates") return "?window=" + encodeURIComponent(windowSelect.value);
    if (s === "diversity" && scopeSelect.value) return "?job=" + encodeURIComponent(scopeSelect.value);
    return "";
  }

  // The server (or the network) is gone: say so over the whole page, and grey what is stale.
  function offline(err) {
    failedSince = failedSince || new Date();
    var banner = document.getElementById("offline-banner");
    banner.textContent = "Server unreachable since " + failedSince.toLocaleTimeString() +
      " (" + err.message + "). The figures below are from " + lastOk.toLocaleTimeString() + " and are not updating; retrying every " + POLL_MS / 1000 + " s.";
    banner.hidden = false;
    document.body.classList.add("stale");
    setText("updated", "offline");
  }

  function renderAll() {
    SECTIONS.forEach(function (s) { if (state[s]) RENDER[s](state[s]); });
  }

  function poll() {
    Promise.all(SECTIONS.map(function (s) {
      return fetch("/admin/data/" + s + query(s), { credentials: "same-origin", cache: "no-store" }).then(function (r) {
        if (r.status === 401) { window.location.assign("/admin/login"); throw new Error("logged out"); }
        if (!r.ok) throw new Error(s + ": HTTP " + r.status);
        return r.json();
      });
    })).then(function (results) {
      SECTIONS.forEach(function (s, i) { state[s] = results[i]; });
      renderAll();
      failedSince = null; lastOk = new Date();
      document.getElementById("offline-banner").hidden = true;
      document.body.classList.remove("stale");
      setText("updated", "updated " + lastOk.toLocaleTimeString());
      document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    }).catch(function (err) {
      if (err.message !== "logged out") offline(err);
    });
  }

  document.getElementById("jobs-body").addEventListener("click", function (ev) {
    var button = ev.target.closest("button.action");
    if (!button) return;
    var action = button.dataset.action, job = button.dataset.job;
    if (action === "cancel" && !window.confirm("Cancel this job? Pending stories will not be made.")) return;
    button.disabled = true;
    var headers = {}; headers["X-Dashboard-Action"] = action;
    fetch("/admin/jobs/" + encodeURIComponent(job) + "/" + action, { method: "POST", credentials: "same-origin", headers: headers })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (res) {
        var box = document.getElementById("action-error");
        box.hidden = res.ok;
        if (!res.ok) box.textContent = action + " failed: " + (res.body.error || "error");
        poll();
      });
  });

  windowSelect.addEventListener("change", function () {
    window.localStorage.setItem("tinystories-window", windowSelect.value);
    poll();
  });
  scopeSelect.addEventListener("change", poll);
  renderAll();
  if (windowSelect.value !== "job") poll();
  window.setInterval(poll, POLL_MS);
})();
