// The Create form's model picker: picking another model puts that model's defaults (steps,
// guidance, sampler) into the form and shows its native and largest sizes. Without JavaScript
// the picker still posts the model; the defaults are then the ones already in the form.
function applyModel(form, option) {
  const set = (name, value) => {
    const field = form.querySelector(`[name=${name}]`);
    if (field && value) field.value = value;
  };
  set("steps", option.dataset.steps);
  set("guidance_scale", option.dataset.guidance);
  set("sampler", option.dataset.sampler);
  const show = (selector, text) => {
    for (const node of form.querySelectorAll(selector)) node.textContent = text;
  };
  show("[data-model-title]", option.textContent.trim());
  show("[data-model-native]", option.dataset.native);
  show("[data-model-max]", option.dataset.max);
  show("[data-model-description]", option.dataset.description);
}

function wire(root) {
  for (const picker of root.querySelectorAll("[data-model-picker]:not([data-wired])")) {
    picker.dataset.wired = "";
    const select = picker.querySelector("select");
    select.addEventListener("change", () => applyModel(select.form, select.selectedOptions[0]));
  }
}

wire(document);
document.body.addEventListener("htmx:afterSwap", (event) => wire(event.target));
