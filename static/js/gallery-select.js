// The gallery's selection for the bulk bar: click a tile's box to select it, shift-click another to
// select (or clear) the whole range between; once something is selected a click on a thumbnail
// selects it too; "Select all on the page" for every tile loaded so far
// (pages that htmx loaded while scrolling included), Escape to clear. The boxes belong to the bar's
// form (form="bulk-form"), so without this script the bar still posts whatever was ticked.
(function () {
  "use strict";

  var BOX = "[data-select-image]";
  var lastClicked = null;

  function boxes() {
    return Array.prototype.slice.call(document.querySelectorAll(BOX));
  }

  function refresh() {
    var form = document.querySelector("[data-bulk-form]");
    if (!form) return;
    var all = boxes();
    var count = 0;
    all.forEach(function (box) {
      var tile = box.closest("[data-gallery-tile]");
      if (tile) tile.classList.toggle("is-selected", box.checked);
      if (box.checked) count += 1;
    });
    form.classList.toggle("has-selection", count > 0);
    var label = form.querySelector("[data-selected-count]");
    if (label) label.textContent = count ? count + " selected" : "Nothing selected: click images to select them (shift-click for a range).";
    form.querySelectorAll("[data-bulk-action]").forEach(function (button) { button.disabled = count === 0; });
    var none = form.querySelector("[data-select-none]");
    if (none) none.hidden = count === 0;
    var everything = form.querySelector("[data-select-all]");
    if (everything) everything.hidden = all.length === 0 || count === all.length;
  }

  function setRange(from, to, checked) {
    var all = boxes();
    var a = all.indexOf(from);
    var b = all.indexOf(to);
    if (a < 0 || b < 0) return;
    var start = Math.min(a, b);
    var end = Math.max(a, b);
    for (var i = start; i <= end; i += 1) all[i].checked = checked;
  }

  function toggled(box, shift) {
    if (shift && lastClicked && lastClicked !== box && lastClicked.isConnected) {
      setRange(lastClicked, box, box.checked);
    }
    lastClicked = box;
    refresh();
  }

  // A click on the box (or its label, which clicks the box) toggles it; with shift, the range too.
  var shiftOnLabel = false;
  document.addEventListener("click", function (event) {
    var label = event.target.closest(".tile-select");
    if (label && event.target.matches && !event.target.matches(BOX)) {
      shiftOnLabel = event.shiftKey;  // the label's own click comes first, then the box's
      return;
    }
    var box = event.target.closest && event.target.closest(BOX);
    if (box) {
      var shift = event.shiftKey || shiftOnLabel;
      shiftOnLabel = false;
      toggled(box, shift);
      return;
    }
    // While something is selected, a click (tap) on a thumbnail selects it instead of opening it;
    // Ctrl/Cmd-click still opens it in a new tab.
    var thumb = event.target.closest(".gallery-thumb");
    if (thumb && !event.ctrlKey && !event.metaKey && document.querySelector(BOX + ":checked")) {
      var tileBox = thumb.closest("[data-gallery-tile]") && thumb.closest("[data-gallery-tile]").querySelector(BOX);
      if (tileBox) {
        event.preventDefault();
        tileBox.checked = !tileBox.checked;
        toggled(tileBox, event.shiftKey);
      }
      return;
    }
    if (event.target.closest("[data-select-all]")) {
      boxes().forEach(function (each) { each.checked = true; });
      refresh();
    } else if (event.target.closest("[data-select-none]")) {
      boxes().forEach(function (each) { each.checked = false; });
      lastClicked = null;
      refresh();
    }
  });

  // Shift-clicking selects text in most browsers: not on the selection boxes.
  document.addEventListener("mousedown", function (event) {
    if (event.shiftKey && event.target.closest && event.target.closest(".tile-select")) event.preventDefault();
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && document.querySelector(BOX + ":checked")) {
      boxes().forEach(function (each) { each.checked = false; });
      lastClicked = null;
      refresh();
    }
  });

  // The browser may restore ticks on back/forward; htmx adds tiles (next page, live push) or removes one.
  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches(BOX)) refresh();
  });
  document.addEventListener("htmx:afterSettle", refresh);
  document.addEventListener("htmx:oobAfterSwap", refresh);  // tiles pushed live over the websocket
  window.addEventListener("pageshow", refresh);
  document.addEventListener("DOMContentLoaded", refresh);
})();
