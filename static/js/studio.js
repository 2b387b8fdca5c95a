// Studio's own small script: theme toggle, random seed, the websocket-to-polling fallback, progress that
// never runs backwards, finished jobs joining Recent, and new job panels scrolled into view.
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
    if (event.detail.event && event.detail.event.code === 4404) return;  // not (or no longer) yours: a poll would 404
    schedulePoll(event.target.closest("[data-job-panel][data-active]"));
  });
  document.addEventListener("htmx:wsError", function (event) {
    schedulePoll(event.target.closest("[data-job-panel][data-active]"));
  });
  document.addEventListener("htmx:wsOpen", function (event) {
    var panel = event.target.closest("[data-job-panel]");
    if (panel) delete panel.dataset.polling;
  });

  // Progress only moves forward while a job runs. The database's copy of a job's progress is saved
  // every half second or so, so a re-render from it (the state sent when a socket connects or the job
  // changes state, a polled panel) can be behind the step the socket already showed. A re-render
  // that is behind is dropped; a queued job (retried) may start again from 0.
  function isBehind(incoming, shown) {
    return !!incoming && !!shown && !incoming.hasAttribute("data-queued")
      && Number(incoming.dataset.step) < Number(shown.dataset.step);
  }
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var target = event.detail.target;
    if (!target.matches || !target.matches("[data-job-progress]")) return;
    var fragment = event.detail.fragment;
    var incoming = fragment.matches && fragment.matches("[data-job-progress]")
      ? fragment : fragment.querySelector("[data-job-progress]");
    if (isBehind(incoming, target)) event.detail.shouldSwap = false;
  });
  var progressBeforeSwap = {};
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (!target || !target.querySelectorAll) return;
    target.querySelectorAll("[data-job-progress]").forEach(function (shown) { progressBeforeSwap[shown.id] = shown; });
  });
  document.addEventListener("htmx:afterSwap", function () {
    Object.keys(progressBeforeSwap).forEach(function (id) {
      var incoming = document.getElementById(id);
      if (incoming && incoming !== progressBeforeSwap[id] && isBehind(incoming, progressBeforeSwap[id])) {
        incoming.replaceWith(progressBeforeSwap[id]);
      }
    });
    progressBeforeSwap = {};
  });

  // A job that finishes on Create joins the Recent grid at once: its final result carries its card
  // in a <template>; where the page has a Recent grid, the card goes first (replacing an older card
  // of the same job). Elsewhere the template stays inert.
  function adoptRecentCards() {
    var grid = document.getElementById("recent-jobs");
    document.querySelectorAll("template[data-recent-card]").forEach(function (template) {
      var card = template.content.firstElementChild;
      template.remove();
      if (!grid || !card) return;
      var older = document.getElementById(card.id);
      if (older) older.remove();
      grid.prepend(card);
    });
  }
  document.addEventListener("htmx:wsAfterMessage", adoptRecentCards);
  document.addEventListener("htmx:afterSettle", adoptRecentCards);

  // A new job panel is scrolled into view below the sticky header (its scroll-margin-top).
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "current-jobs") {
      var panel = event.detail.target.querySelector("[data-job-panel]");
      if (panel) panel.scrollIntoView({ block: "nearest" });
    }
  });
})();
