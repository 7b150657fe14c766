"use strict";
(function () {
  var page = document.body.getAttribute("data-page");
  function $(s) { return document.querySelector(s); }
  function get(url) {
    return fetch(url, { headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok || r.status === 404 ? r.json() : null; })
      .catch(function () { return null; });
  }
  if (page === "home") {
    var raised = $("[data-raised]"), count = $("[data-count]"), bar = $("[data-progress]"), pct = $("[data-percent]");
    setInterval(function () {
      if (document.hidden) return;
      get("/api/v1/total").then(function (t) {
        if (!t || t.error) return;
        raised.textContent = t.raised_display;
        count.textContent = t.donations;
        pct.textContent = t.percent;
        bar.value = Math.min(t.raised_minor, t.goal_minor);
      });
    }, 5000);
  }
  if (page === "success" || page === "error") {
    var el = $("[data-status]"), id = new URLSearchParams(location.search).get("donation"), tries = 0;
    var poll = function () {
      if (!id || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) return;
      get("/api/v1/donations/" + id).then(function (d) {
        var st = !d ? "pending" : d.error ? "unknown" : d.status, msg = el.getAttribute("data-msg-" + st);
        if (msg !== null) el.textContent = msg;
        if (st === "pending" && ++tries < 40) setTimeout(poll, 1500);
      });
    };
    poll();
  }
  // A version 7 UUID: the time in milliseconds, then random bits. Keys
  // that grow with time are stored at the end of the server's key space,
  // which keeps its compactions small (the server's own IDs are the same).
  function timeKey() {
    var b = new Uint8Array(16), t = Date.now(), i, h = "";
    if (window.crypto && crypto.getRandomValues) crypto.getRandomValues(b);
    else for (i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    for (i = 5; i >= 0; i--) { b[i] = t % 256; t = Math.floor(t / 256); }
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    for (i = 0; i < 16; i++) h += (b[i] < 16 ? "0" : "") + b[i].toString(16);
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }
  if (page === "donate") {
    var form = $("form.donate"), custom = $("#custom_amount");
    custom.addEventListener("input", function () {
      if (custom.value) Array.prototype.forEach.call(form.querySelectorAll("input[name=amount]"), function (r) { r.checked = false; });
    });
    form.addEventListener("submit", function () {
      var k = $("[data-idem]");
      if (!k.value) k.value = timeKey();
      form.querySelector("button[type=submit]").disabled = true;
    });
    // Coming back from the gateway with the back button: a new attempt gets a new key.
    window.addEventListener("pageshow", function () {
      $("[data-idem]").value = "";
      form.querySelector("button[type=submit]").disabled = false;
    });
  }
})();
