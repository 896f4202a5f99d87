/* stoker console: live parts of the pages, charts (uPlot, bundled), and actions.
 *
 * Pages are rendered by the gateway; an element with data-live="URL" has its parts
 * (data-part) re-fetched every data-every seconds (an HTML fragment rendered by the same
 * templates), each replaced when it changed. A section with data-series="URL" holds charts fed by that JSON. Forms with the
 * class js-action post in the background with the page's anti-forgery token. Polling
 * pauses while the tab is hidden. Nothing is loaded from anywhere but this gateway.
 */
(function () {
  "use strict";

  var CHART_EVERY_S = 10;
  var CHART_HEIGHT = 220;
  var updaters = [];

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function signInAgain() {
    var here = location.pathname + location.search;
    location.assign("/console/login?next=" + encodeURIComponent(here));
  }

  function setState(kind, text) {
    var el = document.querySelector("[data-live-state]");
    if (!el) return;
    el.className = "live-state" + (kind ? " " + kind : "");
    el.textContent = text;
  }

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var iso = t.getAttribute("datetime");
      var d = new Date(iso);
      if (isNaN(d.getTime())) return;
      t.title = iso;
      t.textContent = d.toLocaleString([], {
        month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23"
      });
    });
  }

  function selectionInside(el) {
    var sel = window.getSelection();
    return sel && !sel.isCollapsed && sel.rangeCount > 0 && el.contains(sel.getRangeAt(0).commonAncestorContainer);
  }

  /* Replace an element with its new version, keeping where the reader had scrolled inside it. */
  function replace(old, fresh) {
    var scrolled = Array.prototype.map.call(old.querySelectorAll("pre, .table-wrap"), function (s) {
      return [s.scrollTop, s.scrollLeft];
    });
    old.replaceWith(fresh);
    var now = fresh.querySelectorAll("pre, .table-wrap");
    if (now.length === scrolled.length) {
      now.forEach(function (s, i) { s.scrollTop = scrolled[i][0]; s.scrollLeft = scrolled[i][1]; });
    }
    localTimes(fresh);
  }

  function Poller(every, work) {
    this.every = every;
    this.work = work;
    this.timer = null;
    this.running = false;
  }
  Poller.prototype.schedule = function () {
    var self = this;
    clearTimeout(this.timer);
    this.timer = setTimeout(function () { self.refresh(); }, this.every * 1000);
  };
  Poller.prototype.refresh = function () {
    var self = this;
    if (document.hidden) { setState("paused", "paused"); return; }  // resumed by visibilitychange
    if (this.running) return;
    this.running = true;
    clearTimeout(this.timer);
    this.work(this).then(function () {
      setState("", "live · " + new Date().toLocaleTimeString());
    }, function (err) {
      if (err && err.signedOut) { signInAgain(); return; }
      setState("offline", err && err.status ? "update failed (HTTP " + err.status + "), retrying"
                                            : "gateway unreachable, retrying");
    }).then(function () {
      self.running = false;
      self.schedule();
    });
  };

  function fetchOk(url, accept) {
    return fetch(url, { credentials: "same-origin", cache: "no-store", headers: { "Accept": accept } })
      .then(function (r) {
        if (r.status === 401) { var e = new Error("signed out"); e.signedOut = true; throw e; }
        if (!r.ok) { var failed = new Error("HTTP " + r.status); failed.status = r.status; throw failed; }
        return r;
      });
  }

  /* -- live fragments ------------------------------------------------------------------ */

  /* A fragment holds the page's parts (data-part="name"); each replaces its namesake when it
   * changed, so the charts and anything else around the parts are left alone. */
  function live(root) {
    var last = {};
    var poller = new Poller(Number(root.getAttribute("data-every")) || 5, function (p) {
      return fetchOk(root.getAttribute("data-live"), "text/html").then(function (r) { return r.text(); })
        .then(function (html) {
          var fragment = document.createElement("template");
          fragment.innerHTML = html;
          fragment.content.querySelectorAll("[data-part]").forEach(function (fresh) {
            var name = fresh.getAttribute("data-part");
            var old = root.querySelector('[data-part="' + name + '"]');
            var text = fresh.outerHTML;
            if (!old || last[name] === text || selectionInside(old)) return;
            replace(old, fresh);
            last[name] = text;
          });
          var every = root.querySelector("[data-live-every]");
          if (every) p.every = Number(every.getAttribute("data-live-every")) || p.every;
        });
    });
    poller.schedule();
    return poller;
  }

  /* -- charts -------------------------------------------------------------------------- */

  var CHARTS = {
    invocations: {
      lines: [
        { label: "invocations", key: "invocations", stroke: "#2563eb", fill: "rgba(37,99,235,0.08)" },
        { label: "errors", key: "errors", stroke: "#dc2626" },
        { label: "throttles", key: "throttles", stroke: "#d97706" },
        { label: "cold starts", key: "cold_starts", stroke: "#7c3aed", dash: [4, 3] }
      ],
      format: function (v) { return v == null ? "–" : String(v); }
    },
    duration: {
      lines: [
        { label: "p50", key: "p50_ms", stroke: "#0891b2" },
        { label: "p99", key: "p99_ms", stroke: "#be185d" }
      ],
      format: function (v) {
        if (v == null) return "–";
        if (v < 10) return v.toFixed(2) + " ms";
        if (v < 10000) return Math.round(v) + " ms";
        return (v / 1000).toFixed(1) + " s";
      }
    }
  };

  function plotOptions(kind, width) {
    var def = CHARTS[kind];
    var stepped = window.uPlot.paths && window.uPlot.paths.stepped ? window.uPlot.paths.stepped({ align: 1 }) : undefined;
    return {
      width: width,
      height: CHART_HEIGHT,
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true },
        y: { range: function (u, min, max) { return [0, Math.max(kind === "duration" ? 1 : 4, (max || 0) * 1.1)]; } }
      },
      axes: [
        { stroke: "#667085", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#e3e7ee" } },
        {
          stroke: "#667085", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#e3e7ee" }, size: kind === "duration" ? 76 : 50,
          values: function (u, vals) { return vals.map(function (v) { return kind === "duration" ? def.format(v) : v; }); }
        }
      ],
      series: [{}].concat(def.lines.map(function (line) {
        return {
          label: line.label, stroke: line.stroke, fill: line.fill, dash: line.dash, width: 1.5,
          // durations have gaps (no invocations, no duration): dots keep a lone value visible
          points: kind === "duration" ? { show: true, size: 5 } : { show: false },
          paths: kind === "invocations" ? stepped : undefined,
          value: function (u, v) { return def.format(v); }
        };
      }))
    };
  }

  function charts(section) {
    var plots = {};
    var figures = section.querySelectorAll("[data-chart]");
    if (window.ResizeObserver) {
      var observer = new ResizeObserver(function () {
        Object.keys(plots).forEach(function (kind) {
          var box = plots[kind].root.parentNode;
          if (box.clientWidth > 0) plots[kind].setSize({ width: box.clientWidth, height: CHART_HEIGHT });
        });
      });
      figures.forEach(function (f) { observer.observe(f); });
    }
    function draw(data) {
      figures.forEach(function (figure) {
        var kind = figure.getAttribute("data-chart");
        var def = CHARTS[kind];
        if (!def || !window.uPlot) return;
        var rows = [data.t].concat(def.lines.map(function (line) { return data[line.key] || []; }));
        var box = figure.querySelector(".plot");
        if (!plots[kind]) {
          plots[kind] = new window.uPlot(plotOptions(kind, box.clientWidth || 600), rows, box);
        } else {
          plots[kind].setData(rows);
        }
      });
    }
    var live = section.closest("[data-every]");  // in step with the figures around the charts
    var poller = new Poller(live ? Number(live.getAttribute("data-every")) || CHART_EVERY_S : CHART_EVERY_S, function () {
      return fetchOk(section.getAttribute("data-series"), "application/json")
        .then(function (r) { return r.json(); }).then(draw);
    });
    poller.refresh();
    return poller;
  }

  /* -- actions ------------------------------------------------------------------------- */

  function notice(text, ok) {
    var el = document.querySelector("[data-notice]");
    if (!el) { if (!ok) window.alert(text); return; }
    el.textContent = text;
    el.className = "notice " + (ok ? "ok" : "bad");
    el.hidden = false;
  }

  function describe(body) {
    if (typeof body.count === "number") {
      return body.count === 1 ? "1 dead letter sent back as a new invocation."
        : body.count + " dead letters sent back as new invocations.";
    }
    return "Done.";
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.classList || !form.classList.contains("js-action")) return;
    ev.preventDefault();
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) return;
    var button = form.querySelector("button");
    if (button) button.disabled = true;
    fetch(form.getAttribute("action"), {
      method: "POST", credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRF-Token": csrfToken(),
                 "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(new FormData(form)).toString()
    }).then(function (r) {
      if (r.status === 401) { signInAgain(); return null; }
      return r.json().catch(function () { return {}; }).then(function (body) {
        notice(r.ok ? describe(body) : (body.error || "The gateway answered " + r.status + "."), r.ok);
      });
    }, function (err) {
      notice("Could not reach the gateway: " + err.message, false);
    }).then(function () {
      if (button) button.disabled = false;
      updaters.forEach(function (u) { u.refresh(); });
    });
  });

  /* -- start --------------------------------------------------------------------------- */

  function start() {
    localTimes(document);
    var done = new URLSearchParams(location.search).get("redriven");
    if (done !== null) {  // after a form post without this script's help
      notice(describe({ count: Number(done) }), true);
      var params = new URLSearchParams(location.search);
      params.delete("redriven");
      history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
    }
    document.querySelectorAll("[data-live]").forEach(function (el) { updaters.push(live(el)); });
    document.querySelectorAll("[data-series]").forEach(function (el) { updaters.push(charts(el)); });
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) updaters.forEach(function (u) { u.refresh(); });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
