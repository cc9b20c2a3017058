// Live dashboard pages: every few seconds, GET this same page again and swap its main content in
// place (no full reload, so the scroll position and the header stay). It waits while staff are
// using the page: a job ticked, a field focused, or the "pause" toggle on (remembered per browser).
(function () {
  "use strict";
  var main = document.getElementById("content-main");
  var toggle = document.getElementById("live-toggle");
  if (!main || !toggle) return;
  var every = (parseInt(toggle.dataset.seconds, 10) || 5) * 1000;
  var key = "ceres-live-paused";

  function paused() { return localStorage.getItem(key) === "1"; }
  function show() {
    toggle.textContent = paused() ? toggle.dataset.resume : toggle.dataset.pause;
    toggle.setAttribute("aria-pressed", paused() ? "true" : "false");
  }
  function busy() {
    if (main.querySelector("input[name=job_ids]:checked, #select-all:checked")) return true;  // a selection
    var focused = document.activeElement;
    return focused && main.contains(focused) && /^(INPUT|SELECT|TEXTAREA)$/.test(focused.tagName);
  }
  function refresh() {
    if (paused() || busy() || document.hidden) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "live" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html || busy()) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("content-main");
        if (fresh) { main.innerHTML = fresh.innerHTML; document.dispatchEvent(new Event("ceres:refreshed")); }
      })
      .catch(function () {});  // offline for a moment: the next tick tries again
  }
  toggle.addEventListener("click", function () {
    localStorage.setItem(key, paused() ? "0" : "1");
    show();
  });
  show();
  setInterval(refresh, every);
})();
