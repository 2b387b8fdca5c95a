// PNG info on Create (templates/generation/_png_info.html): a PNG chosen in the PNG-info form, or
// dropped anywhere on the page, is posted by htmx to generation:png_info; the fields that come back
// (a JSON script element, never executed) are written into the Create form. The server decides
// every value; this script only copies them. Without it the same form posts and Create re-renders.
(function () {
  "use strict";

  var section = document.querySelector("[data-png-info]");
  if (!section) return;
  var form = section.querySelector("form");
  var input = form.querySelector("input[type=file]");
  section.classList.add("png-info-live");  // the submit button hides: choosing a file posts it

  // -- dropping a file anywhere on the page -------------------------------------------------------
  function carriesFiles(event) {
    return !!event.dataTransfer && Array.prototype.indexOf.call(event.dataTransfer.types, "Files") >= 0;
  }
  var dragDepth = 0;
  function dragging(on) {
    dragDepth = on ? dragDepth + 1 : Math.max(0, dragDepth - 1);
    document.body.classList.toggle("png-info-dragging", dragDepth > 0);
  }
  document.addEventListener("dragenter", function (event) { if (carriesFiles(event)) dragging(true); });
  document.addEventListener("dragleave", function (event) { if (carriesFiles(event)) dragging(false); });
  document.addEventListener("dragover", function (event) {
    if (!carriesFiles(event)) return;
    event.preventDefault();  // allows the drop (the browser would otherwise open the file)
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("drop", function (event) {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    document.body.classList.remove("png-info-dragging");
    var files = event.dataTransfer.files;
    if (!files || !files.length) return;
    var chosen = new DataTransfer();
    chosen.items.add(files[0]);
    input.files = chosen.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));  // the form's hx-trigger posts it
  });

  // -- writing the fields into the Create form ------------------------------------------------------
  // The model first: picking it by hand would put its defaults in; here the picture's values win.
  var PLAIN_FIELDS = ["model", "prompt", "negative_prompt", "steps", "guidance_scale", "sampler", "seed", "width", "height"];

  function mark(element) {
    var field = element.closest(".field") || element;
    field.classList.remove("png-info-filled");
    void field.offsetWidth;  // restart the highlight when the same field is filled again
    field.classList.add("png-info-filled");
  }

  function apply(values) {
    var create = document.getElementById("create-form");
    if (!create) return;
    PLAIN_FIELDS.forEach(function (name) {
      if (!Object.prototype.hasOwnProperty.call(values, name)) return;
      var element = create.elements.namedItem(name);
      if (!element || element instanceof RadioNodeList) return;
      element.value = values[name] === null ? "" : String(values[name]);
      element.dispatchEvent(new Event("input", { bubbles: true }));
      mark(element);
    });
    if (values.aspect) {
      var radio = create.querySelector("input[name=aspect][value='" + CSS.escape(values.aspect) + "']");
      if (radio) { radio.checked = true; mark(radio.closest(".aspect-picker") || radio); }
    }
    var custom = create.querySelector("details.advanced");
    if (custom && values.width) custom.open = true;
    create.dispatchEvent(new Event("change", { bubbles: true }));  // one refresh of the cost quote
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    if (!event.detail.target || event.detail.target.id !== "png-info-result") return;
    var data = document.getElementById("png-info-fields");
    if (data) apply(JSON.parse(data.textContent));
  });
})();
