// The board's live part: refresh it every few seconds while the tab is visible, and fill each
// partner-review item's candidates. No framework: fetch, compare, replace.
"use strict";
(function () {
  var cache = new Map(); // candidates URL -> {html, at}: a queue item asks its engagement once a minute
  var CACHE_MS = 60000;
  var busy = false;

  function fillCandidates(root) {
    root.querySelectorAll("[data-candidates]").forEach(function (slot) {
      var url = slot.getAttribute("data-candidates");
      var kept = cache.get(url);
      if (kept) {
        slot.innerHTML = kept.html;
        if (Date.now() - kept.at < CACHE_MS) { return; }
      }
      fetch(url, { credentials: "same-origin", headers: { "X-Board-Live": "1" } })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) { cache.set(url, { html: html, at: Date.now() }); slot.innerHTML = html; })
        .catch(function () { slot.textContent = "Candidates could not be loaded; reload the page."; });
    });
  }

  function live(region) {
    var url = region.getAttribute("data-live");
    var every = Math.max(2, Number(region.getAttribute("data-every") || 5)) * 1000;
    var status = region.getAttribute("data-reload-on-status");
    var last = "";
    var hovering = false;
    // Never swap the part someone is about to click.
    region.addEventListener("pointerover", function () { hovering = true; });
    region.addEventListener("pointerleave", function () { hovering = false; });

    function tick() {
      if (document.hidden || hovering || busy || region.contains(document.activeElement) && document.activeElement !== document.body) {
        return;
      }
      fetch(url, { credentials: "same-origin", headers: { "X-Board-Live": "1" } })
        .then(function (r) {
          if (r.status === 401) { location.reload(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html === null || html === last) { return; }
          last = html;
          var probe = document.createElement("div");
          probe.innerHTML = html;
          var now = probe.querySelector("[data-status]");
          if (status && now && now.getAttribute("data-status") !== status) {
            location.reload();
            return;
          }
          region.innerHTML = html;
          fillCandidates(region);
        })
        .catch(function () { /* the next tick tries again */ });
    }
    setInterval(tick, every);
  }

  document.addEventListener("submit", function () { busy = true; });
  document.addEventListener("DOMContentLoaded", function () {
    fillCandidates(document);
    document.querySelectorAll("[data-live]").forEach(live);
  });
})();
