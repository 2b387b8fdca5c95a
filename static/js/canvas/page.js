// The canvas page: connects the mask editor to the form. It loads the source (the page's
// data-source-url, or the file chosen in the `source` input), the earlier mask (data-mask-url),
// follows the mode (paint only in inpaint, the padded canvas in outpaint), keeps the cost quote
// priced by the size the form will generate, and on submit puts the mask PNG into the `mask` input.
// Without JavaScript the form still posts (image to image and outpaint with an uploaded file).

import { MaskEditor } from "./editor.js";
import { maskPng, setInputFile } from "./export.js";

const SIDES = ["left", "top", "right", "bottom"];

function multipleOf8(value) {
  return Math.max(8, value - (value % 8));
}

function roundUpTo8(value) {
  return value + ((8 - (value % 8)) % 8);
}

async function pictureFrom(blob) {
  return createImageBitmap(blob); // not an <img>: no blob: URL (the CSP allows none), EXIF orientation applied
}

function init(form) {
  const root = form.querySelector("[data-mask-editor]");
  const editor = new MaskEditor(root);
  root.editor = editor; // for the browser tests and the benchmark
  const sourceInput = form.querySelector("input[type=file][name=source]");
  const sourceImage = form.querySelector("input[name=source_image]");
  const maskInput = form.querySelector("input[type=file][name=mask]");
  const model = {
    nativeWidth: Number(form.dataset.nativeWidth), nativeHeight: Number(form.dataset.nativeHeight),
    maxWidth: Number(form.dataset.maxWidth), maxHeight: Number(form.dataset.maxHeight),
  };
  const message = root.querySelector("[data-editor-message]");
  root.querySelectorAll("[data-needs-js]").forEach((element) => { element.hidden = false; });

  function say(text) {
    if (message) { message.textContent = text; message.hidden = !text; }
  }

  const mode = () => form.querySelector("input[name=mode]:checked")?.value || "inpaint";
  const amount = (name) => Math.max(0, Number(form.querySelector(`[name=${name}]`)?.value) || 0);

  /** The size the server will generate for the current settings (canvas_forms.CanvasForm._prepare). */
  function generationSize() {
    if (!editor.loaded) return null;
    let { width, height } = editor.size;
    const current = mode();
    if (current === "inpaint" && form.querySelector("[name=only_masked]")?.checked) {
      return { width: model.nativeWidth, height: model.nativeHeight };
    }
    if (current === "inpaint") return { width: multipleOf8(width), height: multipleOf8(height) };
    const scale = Math.min(1, model.maxWidth / width, model.maxHeight / height);
    width = multipleOf8(Math.round(width * scale));
    height = multipleOf8(Math.round(height * scale));
    if (current === "outpaint") {
      width = roundUpTo8(width + amount("outpaint_left") + amount("outpaint_right"));
      height = roundUpTo8(height + amount("outpaint_top") + amount("outpaint_bottom"));
    }
    return { width, height };
  }

  /** Outpaint amounts are in pixels of the picture as generated (scaled to the model's maximum). */
  function paddingInSourcePixels() {
    if (mode() !== "outpaint" || !editor.loaded) return { left: 0, top: 0, right: 0, bottom: 0 };
    const { width, height } = editor.size;
    const scale = Math.min(1, model.maxWidth / width, model.maxHeight / height);
    return Object.fromEntries(SIDES.map((side) => [side, amount(`outpaint_${side}`) / scale]));
  }

  function update() {
    const current = mode();
    root.dataset.mode = current;
    editor.setPaintable(current === "inpaint");
    editor.setPadding(paddingInSourcePixels());
    const size = generationSize();
    const width = form.querySelector("[data-quote-size=width]");
    const height = form.querySelector("[data-quote-size=height]");
    const note = form.querySelector("[data-generation-size]");
    width.value = size ? size.width : "";
    height.value = size ? size.height : "";
    if (note) {
      const tooBig = size && (size.width > model.maxWidth || size.height > model.maxHeight) && !(current === "inpaint" && form.querySelector("[name=only_masked]")?.checked);
      note.textContent = !size ? "" : tooBig
        ? `${size.width}×${size.height} is more than this model's ${model.maxWidth}×${model.maxHeight}.`
        : `Generates ${size.width}×${size.height}.`;
      note.classList.toggle("is-warning", Boolean(tooBig));
    }
    document.body.dispatchEvent(new CustomEvent("canvas-size"));
  }

  async function loadFromUrl(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`${response.status}`);
    return response.blob();
  }

  // A refused post (not enough credits, a field to fix) comes back with the same source from my
  // gallery: the mask painted on it is kept for this tab and painted back, not lost.
  const keptMaskKey = `studio-canvas-mask:${root.dataset.sourceUrl || ""}`;

  async function keepMask(blob) {
    if (!root.dataset.sourceUrl || !sourceImage?.value) return;
    const bytes = new Uint8Array(await blob.arrayBuffer());
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    try { sessionStorage.setItem(keptMaskKey, btoa(text)); } catch { /* too big for the tab's storage: not kept */ }
  }

  function keptMask() {
    const base64 = form.hasAttribute("data-refused") ? sessionStorage.getItem(keptMaskKey) : null;
    sessionStorage.removeItem(keptMaskKey);
    if (!base64) return null;
    const text = atob(base64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return new Blob([bytes], { type: "image/png" }); // no fetch of a data: URL: the CSP's connect-src is 'self'
  }

  async function loadSource() {
    const url = root.dataset.sourceUrl;
    if (!url) return;
    try {
      const blob = await loadFromUrl(url);
      editor.setSource(await pictureFrom(blob));
      // An earlier job's source is not one of my images: it is posted again as an upload.
      if (!sourceImage?.value && sourceInput) setInputFile(sourceInput, blob, "source.png");
      const kept = keptMask();
      if (kept) editor.setMask(await pictureFrom(kept));
      else if (root.dataset.maskUrl) editor.setMask(await pictureFrom(await loadFromUrl(root.dataset.maskUrl)));
      say("");
    } catch {
      say("The picture could not be loaded. Upload it again or reload the page.");
    }
  }

  sourceInput?.addEventListener("change", async () => {
    const file = sourceInput.files[0];
    if (!file) return;
    if (sourceImage) sourceImage.value = ""; // the chosen file wins over the image the page opened with
    try {
      editor.setSource(await pictureFrom(file));
      say("");
    } catch {
      say("This file is not a picture the browser can read. PNG, JPEG or WebP please.");
    }
  });

  // The strength slider shows its value; the outpaint amounts and the mode redraw and reprice.
  form.addEventListener("input", (event) => {
    if (event.target.name === "strength") {
      const output = form.querySelector("[data-strength-value]");
      if (output) output.textContent = Number(event.target.value).toFixed(2);
    }
    if (/^outpaint_|^only_masked$|^mode$/.test(event.target.name || "")) update();
  });
  form.addEventListener("change", (event) => {
    if (/^outpaint_|^only_masked$|^mode$/.test(event.target.name || "")) update();
  });
  editor.addEventListener("sourceload", update);

  // Submit: the mask (inpaint only) goes into the `mask` file input, then the form posts as usual.
  let exported = false;
  let exporting = false;
  form.addEventListener("submit", async (event) => {
    if (exported || !maskInput) return;
    if (mode() !== "inpaint" || !editor.loaded) {
      setInputFile(maskInput, null);
      return;
    }
    event.preventDefault();
    if (exporting) return; // a second click while the mask is being encoded: one post only
    exporting = true;
    const submitter = event.submitter;
    if (submitter) submitter.disabled = true;
    try {
      const png = await maskPng(editor.layers.mask);
      setInputFile(maskInput, png, "mask.png");
      if (png) await keepMask(png);
    } finally {
      if (submitter) submitter.disabled = false;
      exporting = false;
    }
    exported = true;
    form.requestSubmit(submitter && submitter.form === form ? submitter : undefined);
    exported = false;
  });

  update();
  loadSource();
}

const form = document.querySelector("[data-canvas-form]");
if (form) init(form);
