// The meter page: uPlot history of V, I, P, PF and f, and live values over server-sent
// events. Everything a meter sent is put on the page as text (textContent), never as HTML.
"use strict";

// The fleet page: the table is fetched again every few seconds (the same server-rendered,
// escaped rows) and swapped in, keeping the search and page.
(function () {
  var table = document.getElementById("fleet");
  if (!table) { return; }
  function refresh() {
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) {
        if (r.redirected || !r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var body = doc.querySelector("#fleet tbody");
        if (body) {
          table.replaceChild(document.importNode(body, true), table.tBodies[0]);
          table.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () {});
  }
  setInterval(refresh, 5000);
}());

(function () {
  var live = document.getElementById("live");
  if (!live) { return; }
  var meter = live.getAttribute("data-meter");
  var base = "/ui/meters/" + encodeURIComponent(meter);
  var SERIES = [
    { key: "vrms", label: "V", unit: "V", color: "#2563eb" },
    { key: "irms", label: "I", unit: "A", color: "#d97706" },
    { key: "p", label: "P", unit: "W", color: "#059669" },
    { key: "pf", label: "PF", unit: "", color: "#7c3aed" },
    { key: "f", label: "f", unit: "Hz", color: "#dc2626" }
  ];
  var data = null;          // [times, vrms, irms, p, pf, f]
  var plots = [];
  var last = 0;
  var count = 0;
  var source = null;

  function fixed(v, digits) {
    return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "-";
  }

  function showValues(r) {
    document.getElementById("live-vrms").textContent = fixed(r.vrms, 1);
    document.getElementById("live-irms").textContent = fixed(r.irms, 3);
    document.getElementById("live-p").textContent = fixed(r.p, 1);
    document.getElementById("live-pf").textContent = fixed(r.pf, 3);
    document.getElementById("live-f").textContent = fixed(r.f, 3);
    document.getElementById("live-kwh").textContent = fixed(r.kwh, 3);
    if (typeof r.t === "number") {
      document.getElementById("live-t").textContent = new Date(r.t * 1000).toLocaleString();
    }
  }

  function num(v) { return typeof v === "number" && isFinite(v) ? v : null; }

  function push(r) {
    if (!data || typeof r.t !== "number") { return; }
    data[0].push(r.t);
    SERIES.forEach(function (s, i) { data[i + 1].push(num(r[s.key])); });
  }

  function draw() {
    var holder = document.getElementById("plots");
    if (!holder || typeof uPlot === "undefined") { return; }
    plots.forEach(function (p) { p.destroy(); });
    plots = [];
    var width = Math.max(300, Math.min(holder.clientWidth || 900, 1100));
    SERIES.forEach(function (s, i) {
      plots.push(new uPlot({
        width: width, height: 150, title: s.label + (s.unit ? " (" + s.unit + ")" : ""),
        series: [{}, { label: s.label, stroke: s.color, width: 1.5, spanGaps: false }],
        scales: { x: { time: true } }, legend: { show: true }
      }, [data[0], data[i + 1]], holder));
    });
  }

  function redraw() {
    plots.forEach(function (p, i) { p.setData([data[0], data[i + 1]]); });
  }

  function load() {
    var hours = document.getElementById("hours").value;
    return fetch(base + "/readings.json?hours=" + encodeURIComponent(hours),
                 { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (rows) {
        data = [[]].concat(SERIES.map(function () { return []; }));
        rows.forEach(function (r) { push(r); last = Math.max(last, r.seq); });
        draw();
      });
  }

  function listen() {
    if (source) { source.close(); }
    source = new EventSource(base + "/stream?after=" + last);
    source.addEventListener("reading", function (ev) {
      var r = JSON.parse(ev.data);
      if (r.seq <= last) { return; }
      last = r.seq;
      count += 1;
      live.setAttribute("data-after", String(last));
      document.getElementById("live-count").textContent = String(count);
      showValues(r);
      push(r);
      redraw();
    });
  }

  document.getElementById("hours").addEventListener("change", function () {
    load().catch(function () {});
  });
  load().catch(function () {}).then(listen);
}());
