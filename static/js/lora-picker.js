// The Create (and canvas) form's LoRA picker: its rows are plain form fields (repeated
// lora / lora_weight pairs) that post without JavaScript; this adds an "Add a LoRA" button
// and a "Remove" button per row, and shows each slider's number as it moves.
function rowsOf(picker) {
  return [...picker.querySelectorAll("[data-lora-row]")];
}

function showWeight(row) {
  const slider = row.querySelector("input[type=range]");
  const output = row.querySelector("[data-lora-weight-value]");
  if (slider && output) output.textContent = Number(slider.value).toFixed(2);
}

function renumber(picker) {
  rowsOf(picker).forEach((row, index) => {
    const select = row.querySelector("select");
    const slider = row.querySelector("input[type=range]");
    const [selectLabel, sliderLabel] = row.querySelectorAll("label");
    select.id = `id_lora_${index}`;
    slider.id = `id_lora_weight_${index}`;
    if (selectLabel) selectLabel.htmlFor = select.id;
    if (sliderLabel) sliderLabel.htmlFor = slider.id;
  });
}

function addRemoveButton(picker, row) {
  if (row.querySelector("[data-lora-remove]")) return;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "btn btn-ghost";
  button.dataset.loraRemove = "";
  button.textContent = "Remove";
  button.addEventListener("click", () => {
    if (rowsOf(picker).length > 1) {
      row.remove();
    } else {
      row.querySelector("select").value = "";
      row.querySelector("input[type=range]").value = "1";
      showWeight(row);
    }
    renumber(picker);
    update(picker);
  });
  row.append(button);
}

function update(picker) {
  const max = Number(picker.dataset.max || 5);
  const adder = picker.querySelector("[data-lora-add]");
  if (adder) adder.hidden = rowsOf(picker).length >= max;
}

export function setUpLoraPicker(picker) {
  if (picker.dataset.loraReady) return;
  picker.dataset.loraReady = "1";
  const rows = rowsOf(picker);
  // Without JavaScript the server draws one empty row to fill in; with it, empty rows beyond the
  // first are dropped and "Add a LoRA" makes new ones.
  rows.slice(1).forEach((row) => { if (!row.querySelector("select").value) row.remove(); });
  rowsOf(picker).forEach((row) => { addRemoveButton(picker, row); showWeight(row); });
  const adder = document.createElement("button");
  adder.type = "button";
  adder.className = "btn";
  adder.dataset.loraAdd = "";
  adder.textContent = "Add a LoRA";
  adder.addEventListener("click", () => {
    const last = rowsOf(picker).at(-1);
    const row = last.cloneNode(true);
    row.querySelector("select").value = "";
    row.querySelector("input[type=range]").value = "1";
    row.querySelector("[data-lora-remove]")?.remove();
    last.after(row);
    addRemoveButton(picker, row);
    showWeight(row);
    renumber(picker);
    update(picker);
    row.querySelector("select").focus();
  });
  picker.append(adder);
  picker.addEventListener("input", (event) => {
    const row = event.target.closest("[data-lora-row]");
    if (row) showWeight(row);
  });
  renumber(picker);
  update(picker);
}

function setUpAll(root = document) {
  root.querySelectorAll("[data-lora-picker]").forEach(setUpLoraPicker);
}

setUpAll();
// Create's form is swapped by htmx when a post is refused: set up the new picker too.
document.addEventListener("htmx:afterSettle", () => setUpAll());
