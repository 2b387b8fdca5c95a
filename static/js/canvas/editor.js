// The mask editor: a picture with a tinted mask over it, painted with a brush or an eraser through
// pointer events (mouse, pen with pressure, touch), zoomed with the wheel or a pinch and panned with
// space-drag, a middle-button drag or two fingers. Undo and redo, clear, invert, fill. Brush settings
// are remembered in localStorage. It knows nothing of the server: the page gives it pictures and
// asks for the mask (layers.mask, exported by export.js).
//
// Markup it expects inside `root` (all optional but the viewport and its canvas):
//   [data-editor-viewport] > canvas[data-editor-view]     where the picture is shown and painted
//   button[data-tool=brush|eraser]                         aria-pressed marks the current tool
//   input[type=range][data-setting=size|hardness|opacity]  with output[data-setting-value=...]
//   button[data-action=undo|redo|clear|invert|fill|zoom-in|zoom-out|fit]
//   [data-editor-status]                                   size and zoom, for people

import { Brush, MAX_SIZE, MIN_SIZE, Stroke } from "./brush.js";
import { History } from "./history.js";
import { Layers, TINT_CSS } from "./layers.js";

const SETTINGS_KEY = "studio-canvas-brush";
const MIN_ZOOM = 0.02;
const MAX_ZOOM = 32;
const DEFAULTS = { size: 40, hardness: 0.8, opacity: 0.5, tool: "brush" };

function isTextEntry(element) {
  if (!element || !element.tagName) return false;
  if (element.isContentEditable || element.tagName === "TEXTAREA" || element.tagName === "SELECT") return true;
  return element.tagName === "INPUT" && !["range", "checkbox", "radio", "button", "submit", "file"].includes(element.type);
}

function loadSettings() {
  try {
    return { ...DEFAULTS, ...JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}") };
  } catch {
    return { ...DEFAULTS };
  }
}

export class MaskEditor extends EventTarget {
  constructor(root) {
    super();
    this.root = root;
    this.viewport = root.querySelector("[data-editor-viewport]");
    this.canvas = this.viewport.querySelector("canvas[data-editor-view]");
    this.ctx = this.canvas.getContext("2d");
    this.layers = new Layers();
    this.history = new History();
    const settings = loadSettings();
    this.brush = new Brush({ size: settings.size, hardness: settings.hardness, colour: TINT_CSS });
    this.brush.erasing = settings.tool === "eraser";
    this.opacity = settings.opacity;
    this.paintable = true; // false: the picture is only shown (image to image, outpaint)
    this.maskVisible = true;
    this.padding = { left: 0, top: 0, right: 0, bottom: 0 }; // shown around the picture (outpaint)
    this.view = { scale: 1, x: 0, y: 0 }; // screen = image * scale + (x, y), in CSS pixels
    this.pointers = new Map();
    this.gesture = null; // {kind: "stroke"|"pan"|"pinch", ...}
    this.cursor = null; // the brush outline's centre in image pixels
    this.spaceHeld = false;
    this.backup = document.createElement("canvas"); // the mask before the current stroke
    this._frame = 0;
    this._bind();
    this._syncControls();
    this._resize();
  }

  // --- Public API -------------------------------------------------------------------------------

  get loaded() { return this.layers.loaded; }
  get size() { return { width: this.layers.width, height: this.layers.height }; }

  /** Show a new picture; the mask and history start empty. */
  setSource(picture) {
    this.layers.setSource(picture);
    this.backup.width = picture.width;
    this.backup.height = picture.height;
    this.history.clear();
    this.root.dataset.loaded = "";
    this.fit();
    this._changed();
    this.dispatchEvent(new CustomEvent("sourceload", { detail: this.size }));
  }

  /** Start from an earlier mask (white = repaint); it can be undone like any edit. */
  setMask(picture) {
    this._edit(() => this.layers.loadMask(picture));
  }

  setPaintable(paintable) {
    this.paintable = paintable;
    this.maskVisible = paintable;
    this._cancelStroke();
    this._render();
  }

  setPadding(padding) {
    const changed = ["left", "top", "right", "bottom"].some((side) => padding[side] !== this.padding[side]);
    this.padding = { ...padding };
    if (changed) this.fit();
  }

  undo() { if (this.history.undo(this.layers.maskCtx)) this._changed(); }
  redo() { if (this.history.redo(this.layers.maskCtx)) this._changed(); }
  clear() { this._edit(() => this.layers.clear()); }
  fill() { this._edit(() => this.layers.fill()); }
  invert() { this._edit(() => this.layers.invert()); }

  setTool(tool) {
    this.brush.erasing = tool === "eraser";
    this._saveSettings();
    this._syncControls();
  }

  setBrushSize(size) {
    this.brush.setSize(size);
    this._saveSettings();
    this._syncControls();
    this._render();
  }

  /** Fit the picture (and any padding) into the viewport. */
  fit() {
    const { width, height } = this._viewportSize();
    const frame = this._frameRect();
    if (!frame.width || !width) return this._render();
    const scale = Math.min(width / frame.width, height / frame.height) * 0.96;
    this.view = {
      scale,
      x: (width - frame.width * scale) / 2 - frame.x * scale,
      y: (height - frame.height * scale) / 2 - frame.y * scale,
    };
    this._render();
  }

  zoomAt(clientX, clientY, factor) {
    const rect = this.canvas.getBoundingClientRect();
    const px = clientX - rect.left;
    const py = clientY - rect.top;
    const scale = Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, this.view.scale * factor));
    const applied = scale / this.view.scale;
    this.view = { scale, x: px - (px - this.view.x) * applied, y: py - (py - this.view.y) * applied };
    this._render();
  }

  zoomCentre(factor) {
    const rect = this.canvas.getBoundingClientRect();
    this.zoomAt(rect.left + rect.width / 2, rect.top + rect.height / 2, factor);
  }

  toImage(clientX, clientY) {
    const rect = this.canvas.getBoundingClientRect();
    return { x: (clientX - rect.left - this.view.x) / this.view.scale, y: (clientY - rect.top - this.view.y) / this.view.scale };
  }

  // --- Edits and history ------------------------------------------------------------------------

  /** A whole-mask edit recorded as one step. */
  _edit(change) {
    if (!this.loaded) return;
    this._cancelStroke();
    const before = this.layers.snapshot();
    change();
    this.history.push({ x: 0, y: 0, before, after: this.layers.snapshot() });
    this._changed();
  }

  _beginStroke(point, pressure) {
    const backup = this.backup.getContext("2d");
    backup.globalCompositeOperation = "copy";
    backup.drawImage(this.layers.mask, 0, 0);
    this.gesture = { kind: "stroke", stroke: new Stroke(this.layers.maskCtx, this.brush) };
    this.gesture.stroke.begin(point.x, point.y, pressure);
    this._render();
  }

  _endStroke() {
    const bounds = this.gesture.stroke.end();
    this.gesture = null;
    if (!bounds) return;
    const x = Math.max(0, Math.floor(bounds.x0));
    const y = Math.max(0, Math.floor(bounds.y0));
    const x1 = Math.min(this.layers.width, Math.ceil(bounds.x1));
    const y1 = Math.min(this.layers.height, Math.ceil(bounds.y1));
    if (x1 <= x || y1 <= y) return this._render(); // entirely outside the picture
    const before = this.backup.getContext("2d").getImageData(x, y, x1 - x, y1 - y);
    this.history.push({ x, y, before, after: this.layers.snapshot(x, y, x1 - x, y1 - y) });
    this._changed();
  }

  /** A stroke interrupted (a second finger: a pinch) leaves no trace. */
  _cancelStroke() {
    if (this.gesture?.kind !== "stroke") return;
    this.gesture = null;
    const ctx = this.layers.maskCtx;
    ctx.save();
    ctx.globalCompositeOperation = "copy";
    ctx.drawImage(this.backup, 0, 0);
    ctx.restore();
    this._render();
  }

  _changed() {
    this._syncControls();
    this._render();
    this.dispatchEvent(new Event("maskchange"));
  }

  // --- Input --------------------------------------------------------------------------------------

  _bind() {
    const canvas = this.canvas;
    canvas.addEventListener("pointerdown", (event) => this._pointerDown(event));
    canvas.addEventListener("pointermove", (event) => this._pointerMove(event));
    canvas.addEventListener("pointerup", (event) => this._pointerUp(event));
    canvas.addEventListener("pointercancel", (event) => this._pointerUp(event, true));
    canvas.addEventListener("pointerleave", () => { this.cursor = null; this._render(); });
    canvas.addEventListener("contextmenu", (event) => event.preventDefault());
    canvas.addEventListener("wheel", (event) => {
      event.preventDefault();
      const speed = event.ctrlKey ? 0.01 : 0.0015; // ctrl+wheel is a trackpad pinch: small deltas
      const delta = event.deltaMode === 1 ? event.deltaY * 16 : event.deltaY;
      this.zoomAt(event.clientX, event.clientY, Math.exp(-delta * speed));
    }, { passive: false });
    document.addEventListener("keydown", (event) => this._keyDown(event));
    document.addEventListener("keyup", (event) => {
      if (event.code !== "Space" || !this.spaceHeld) return;
      event.preventDefault(); // a focused button must not be pressed by the space that panned
      this.spaceHeld = false;
      this.root.classList.remove("is-panning");
    });
    new ResizeObserver(() => this._resize()).observe(this.viewport);

    this.root.addEventListener("click", (event) => {
      const tool = event.target.closest("[data-tool]");
      if (tool) this.setTool(tool.dataset.tool);
      const action = event.target.closest("[data-action]");
      if (!action) return;
      const actions = {
        undo: () => this.undo(), redo: () => this.redo(), clear: () => this.clear(), invert: () => this.invert(),
        fill: () => this.fill(), fit: () => this.fit(), "zoom-in": () => this.zoomCentre(1.25),
        "zoom-out": () => this.zoomCentre(0.8),
      };
      actions[action.dataset.action]?.();
    });
    this.root.addEventListener("input", (event) => {
      const setting = event.target.dataset?.setting;
      if (!setting) return;
      const value = Number(event.target.value);
      if (setting === "size") this.brush.setSize(value);
      if (setting === "hardness") this.brush.setHardness(value / 100);
      if (setting === "opacity") this.opacity = value / 100;
      this._saveSettings();
      this._syncControls();
      this._render();
    });
  }

  _pointerDown(event) {
    if (!this.loaded) return;
    // The canvas takes the focus, so the keys ([ ] Ctrl+Z, space) reach the editor, not the prompt.
    if (document.activeElement !== this.canvas) this.canvas.focus({ preventScroll: true });
    this.canvas.setPointerCapture(event.pointerId);
    this.pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    if (this.pointers.size === 2) {
      this._cancelStroke();
      const [a, b] = [...this.pointers.values()];
      this.gesture = { kind: "pinch", distance: Math.hypot(a.x - b.x, a.y - b.y), mid: { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 } };
      return;
    }
    if (this.pointers.size > 2) return;
    const panning = this.spaceHeld || event.button === 1 || (!this.paintable && event.button === 0);
    if (panning) {
      event.preventDefault();
      this.gesture = { kind: "pan", last: { x: event.clientX, y: event.clientY } };
      this.root.classList.add("is-panning");
    } else if (event.button === 0 && this.paintable) {
      event.preventDefault();
      this._beginStroke(this.toImage(event.clientX, event.clientY), this._pressure(event));
    }
  }

  _pointerMove(event) {
    if (this.pointers.has(event.pointerId)) this.pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    const gesture = this.gesture;
    if (gesture?.kind === "stroke") {
      // Coalesced events: every sample the pointer made since the last frame, for smooth fast strokes.
      const samples = event.getCoalescedEvents?.().length ? event.getCoalescedEvents() : [event];
      for (const sample of samples) {
        const point = this.toImage(sample.clientX, sample.clientY);
        gesture.stroke.moveTo(point.x, point.y, this._pressure(sample));
      }
    } else if (gesture?.kind === "pan") {
      this.view.x += event.clientX - gesture.last.x;
      this.view.y += event.clientY - gesture.last.y;
      gesture.last = { x: event.clientX, y: event.clientY };
    } else if (gesture?.kind === "pinch" && this.pointers.size >= 2) {
      const [a, b] = [...this.pointers.values()];
      const distance = Math.hypot(a.x - b.x, a.y - b.y);
      const mid = { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
      this.view.x += mid.x - gesture.mid.x;
      this.view.y += mid.y - gesture.mid.y;
      if (gesture.distance > 0) this.zoomAt(mid.x, mid.y, distance / gesture.distance);
      gesture.distance = distance;
      gesture.mid = mid;
    }
    this.cursor = event.pointerType === "touch" ? null : this.toImage(event.clientX, event.clientY);
    this._render();
  }

  _pointerUp(event, cancelled = false) {
    this.pointers.delete(event.pointerId);
    const kind = this.gesture?.kind;
    if (kind === "stroke") {
      if (cancelled) this._cancelStroke(); else this._endStroke();
    } else if (kind === "pan") {
      this.gesture = null;
      if (!this.spaceHeld) this.root.classList.remove("is-panning");
    } else if (kind === "pinch" && this.pointers.size === 0) {
      this.gesture = null; // the finger left behind after a pinch does not start painting
    }
  }

  _pressure(event) {
    return event.pointerType === "pen" && event.pressure > 0 ? event.pressure : 1;
  }

  _keyDown(event) {
    // Only while the mask can be painted, and never while typing in a field.
    if (isTextEntry(event.target) || !this.loaded || !this.paintable || this.root.offsetParent === null) return;
    const ctrl = event.ctrlKey || event.metaKey;
    const key = event.key.toLowerCase();
    if (ctrl && key === "z") {
      event.preventDefault();
      if (event.shiftKey) this.redo(); else this.undo();
    } else if (ctrl && key === "y") {
      event.preventDefault();
      this.redo();
    } else if (ctrl || event.altKey) {
      return;
    } else if (event.key === "[" || event.key === "]") {
      event.preventDefault();
      const step = Math.max(1, Math.round(this.brush.size * 0.15));
      this.setBrushSize(this.brush.size + (event.key === "]" ? step : -step));
    } else if (event.code === "Space") {
      // Space pans while the pointer is over the picture (or the picture has the focus), even if a
      // toolbar button has the focus; elsewhere it scrolls the page or presses buttons as usual.
      if (!this.viewport.matches(":hover") && document.activeElement !== this.canvas) return;
      event.preventDefault();
      this.spaceHeld = true;
      this.root.classList.add("is-panning");
    } else if (key === "b" || key === "e") {
      this.setTool(key === "e" ? "eraser" : "brush");
    }
  }

  // --- Settings and controls ------------------------------------------------------------------

  _saveSettings() {
    const settings = { size: this.brush.size, hardness: this.brush.hardness, opacity: this.opacity,
      tool: this.brush.erasing ? "eraser" : "brush" };
    try { localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings)); } catch { /* private mode: not kept */ }
  }

  _syncControls() {
    const values = { size: this.brush.size, hardness: Math.round(this.brush.hardness * 100), opacity: Math.round(this.opacity * 100) };
    for (const [name, value] of Object.entries(values)) {
      const input = this.root.querySelector(`[data-setting=${name}]`);
      if (input) {
        if (name === "size") { input.min = MIN_SIZE; input.max = MAX_SIZE; }
        input.value = value;
      }
      const output = this.root.querySelector(`[data-setting-value=${name}]`);
      if (output) output.textContent = name === "size" ? `${value} px` : `${value}%`;
    }
    const tool = this.brush.erasing ? "eraser" : "brush";
    this.root.querySelectorAll("[data-tool]").forEach((button) => button.setAttribute("aria-pressed", String(button.dataset.tool === tool)));
    const undo = this.root.querySelector("[data-action=undo]");
    const redo = this.root.querySelector("[data-action=redo]");
    if (undo) undo.disabled = !this.history.canUndo;
    if (redo) redo.disabled = !this.history.canRedo;
  }

  // --- Drawing the view -------------------------------------------------------------------------

  _viewportSize() {
    return { width: this.canvas.clientWidth, height: this.canvas.clientHeight };
  }

  _frameRect() {
    const p = this.padding;
    return { x: -p.left, y: -p.top, width: this.layers.width + p.left + p.right, height: this.layers.height + p.top + p.bottom };
  }

  _resize() {
    const ratio = window.devicePixelRatio || 1;
    const { width, height } = this._viewportSize();
    const wasEmpty = !this.canvas.width || this.canvas.width < 2;
    this.canvas.width = Math.max(1, Math.round(width * ratio));
    this.canvas.height = Math.max(1, Math.round(height * ratio));
    if (wasEmpty) this.fit(); else this._render();
  }

  _render() {
    if (this._frame) return;
    this._frame = requestAnimationFrame(() => {
      this._frame = 0;
      this._draw();
    });
  }

  _draw() {
    const ctx = this.ctx;
    const ratio = this.canvas.width / Math.max(1, this.canvas.clientWidth);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this._status();
    if (!this.loaded) return;
    const { scale, x, y } = this.view;
    ctx.setTransform(ratio * scale, 0, 0, ratio * scale, ratio * x, ratio * y);
    const frame = this._frameRect();
    const line = 1 / scale;
    if (frame.width !== this.layers.width || frame.height !== this.layers.height) {
      // Outpaint: the new area is the mask, shown in the mask's tint with a dashed edge.
      ctx.fillStyle = TINT_CSS;
      ctx.globalAlpha = Math.max(0.25, this.opacity);
      ctx.fillRect(frame.x, frame.y, frame.width, frame.height);
      ctx.globalAlpha = 1;
      ctx.setLineDash([6 * line, 4 * line]);
      ctx.lineWidth = 2 * line;
      ctx.strokeStyle = TINT_CSS;
      ctx.strokeRect(frame.x, frame.y, frame.width, frame.height);
      ctx.setLineDash([]);
    }
    ctx.imageSmoothingEnabled = scale < 2; // zoomed in: see the pixels painted
    ctx.drawImage(this.layers.source, 0, 0);
    if (this.maskVisible) {
      ctx.globalAlpha = this.opacity;
      ctx.drawImage(this.layers.mask, 0, 0);
      ctx.globalAlpha = 1;
    }
    if (this.cursor && this.paintable && !this.spaceHeld && this.gesture?.kind !== "pan") {
      const r = this.brush.size / 2;
      ctx.lineWidth = line;
      for (const [colour, offset] of [["rgba(0, 0, 0, .7)", line], ["rgba(255, 255, 255, .95)", 0]]) {
        ctx.strokeStyle = colour;
        ctx.beginPath();
        ctx.arc(this.cursor.x, this.cursor.y, r + offset, 0, Math.PI * 2);
        ctx.stroke();
      }
    }
  }

  _status() {
    const status = this.root.querySelector("[data-editor-status]");
    if (!status) return;
    status.textContent = this.loaded
      ? `${this.layers.width}×${this.layers.height} · zoom ${Math.round(this.view.scale * 100)}%`
      : "";
  }
}
