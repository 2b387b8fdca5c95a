// New images pushed over a gallery websocket (generation/consumers.py) join the top of the grid.
// A push may repeat what the page already shows (the socket catches up from a minute before the
// page was rendered, and again on each reconnect): a tile already on the page is dropped, and a
// Recent card (data-live-replace) replaces the older card of its job. When the server closes
// the socket with 4404 (access lost), the page says it no longer updates.
(function () {
  "use strict";

  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var fragment = event.detail.fragment;
    if (!fragment || !fragment.hasAttribute || !fragment.hasAttribute("data-live-tiles")) return;
    var replace = fragment.hasAttribute("data-live-replace");
    Array.from(fragment.children).forEach(function (incoming) {
      var shown = incoming.id && document.getElementById(incoming.id);
      if (!shown) return;
      if (replace) shown.remove(); else incoming.remove();
    });
    if (!fragment.children.length) event.detail.shouldSwap = false;
  });

  // A grid with data-live-limit keeps that many items (Create's Recent grid shows the last few).
  document.addEventListener("htmx:wsAfterMessage", function () {
    document.querySelectorAll("[data-live-limit]").forEach(function (grid) {
      var limit = Number(grid.dataset.liveLimit);
      while (limit && grid.children.length > limit) grid.lastElementChild.remove();
    });
  });

  document.addEventListener("htmx:wsClose", function (event) {
    var grid = event.target.closest("[data-live-gallery]");
    var close = event.detail && event.detail.event;
    if (!grid || !close || close.code !== 4404 || grid.dataset.liveStopped) return;
    grid.dataset.liveStopped = "1";
    var note = document.createElement("p");
    note.className = "live-stopped";
    note.setAttribute("role", "status");
    note.textContent = "This page no longer updates live. Reload it to see what you can still open.";
    grid.before(note);
  });
})();
