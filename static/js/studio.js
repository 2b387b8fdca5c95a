// Studio's own small script: theme toggle, random seed, and the websocket-to-polling fallback.
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-theme-toggle]")) {
      var root = document.documentElement;
      var dark = root.dataset.theme ? root.dataset.theme === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
      root.dataset.theme = dark ? "light" : "dark";
      localStorage.setItem("studio-theme", root.dataset.theme);
    }
    if (event.target.closest("[data-random-seed]")) {
      var seed = document.querySelector("#create-form input[name=seed]");
      if (seed) { seed.value = ""; seed.placeholder = "random"; }
    }
  });

  // A job panel listens on its websocket. If the socket closes before the job is final, poll
  // the panel over HTTP; the fresh panel reconnects its own websocket while the job is active.
  // A poll that fails (the server is unreachable) leaves the panel in place: poll it again.
  // Polling stops when the panel is swapped for a fresh one or its own socket opens again.
  var POLL_MS = 2000;
  function schedulePoll(panel) {
    if (!panel || !panel.isConnected || panel.dataset.polling) return;
    panel.dataset.polling = "1";
    setTimeout(function poll() {
      if (!panel.isConnected || !panel.dataset.polling) return;
      htmx.ajax("GET", panel.dataset.panelUrl, { target: panel, swap: "outerHTML" });
      setTimeout(poll, POLL_MS);
    }, POLL_MS);
  }
  document.addEventListener("htmx:wsClose", function (event) {
    schedulePoll(event.target.closest("[data-job-panel][data-active]"));
  });
  document.addEventListener("htmx:wsError", function (event) {
    schedulePoll(event.target.closest("[data-job-panel][data-active]"));
  });
  document.addEventListener("htmx:wsOpen", function (event) {
    var panel = event.target.closest("[data-job-panel]");
    if (panel) delete panel.dataset.polling;
  });
})();
