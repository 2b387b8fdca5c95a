// The brush: round stamps placed along a stroke at a fraction of their diameter, so a fast mouse
// still leaves a continuous line. Hardness is where the edge starts to fade (1 = a hard disc).
// Sizes are in image pixels, so a stroke covers the same pixels whatever the zoom.

export const MIN_SIZE = 1;
export const MAX_SIZE = 400;
const SPACING = 0.15; // of the diameter

export class Brush {
  constructor({ size = 40, hardness = 0.8, colour = "rgb(255, 40, 110)" } = {}) {
    this.size = size;
    this.hardness = hardness;
    this.colour = colour;
    this.erasing = false;
    this._stamp = null;
    this._stampKey = "";
  }

  setSize(size) {
    this.size = Math.max(MIN_SIZE, Math.min(MAX_SIZE, Math.round(size)));
  }

  setHardness(hardness) {
    this.hardness = Math.max(0, Math.min(1, hardness));
  }

  /** A canvas holding one dab at full size: drawn scaled for pressure, cached until the settings change. */
  stamp() {
    const key = `${this.size}|${this.hardness}|${this.colour}`;
    if (this._stamp && this._stampKey === key) return this._stamp;
    const diameter = Math.max(1, Math.ceil(this.size));
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = diameter;
    const ctx = canvas.getContext("2d");
    const r = diameter / 2;
    if (this.hardness >= 0.999 || diameter <= 2) {
      ctx.fillStyle = this.colour;
    } else {
      const gradient = ctx.createRadialGradient(r, r, r * this.hardness, r, r, r);
      gradient.addColorStop(0, this.colour);
      // The gradient's transparent end takes the brush colour's RGB so the edge does not darken.
      gradient.addColorStop(1, this.colour.replace("rgb(", "rgba(").replace(")", ", 0)"));
      ctx.fillStyle = gradient;
    }
    ctx.beginPath();
    ctx.arc(r, r, r, 0, Math.PI * 2);
    ctx.fill();
    this._stamp = canvas;
    this._stampKey = key;
    return canvas;
  }

  /** One dab centred on (x, y); returns the rectangle it touched. */
  dab(ctx, x, y, pressure = 1) {
    const size = Math.max(1, this.size * pressure);
    const half = size / 2;
    ctx.drawImage(this.stamp(), x - half, y - half, size, size);
    return { x0: x - half, y0: y - half, x1: x + half, y1: y + half };
  }
}

/** Draws strokes onto a 2D context with a Brush; begin/moveTo/end, tracking the rectangle changed. */
export class Stroke {
  constructor(ctx, brush) {
    this.ctx = ctx;
    this.brush = brush;
    this.last = null;
    this.carry = 0; // distance walked since the last dab
    this.bounds = null;
  }

  _grow(box) {
    const b = this.bounds;
    this.bounds = b ? { x0: Math.min(b.x0, box.x0), y0: Math.min(b.y0, box.y0), x1: Math.max(b.x1, box.x1),
      y1: Math.max(b.y1, box.y1) } : box;
  }

  _dab(x, y, pressure) {
    this._grow(this.brush.dab(this.ctx, x, y, pressure));
  }

  begin(x, y, pressure = 1) {
    this.ctx.save();
    this.ctx.globalCompositeOperation = this.brush.erasing ? "destination-out" : "source-over";
    this.last = { x, y, pressure };
    this.carry = 0;
    this._dab(x, y, pressure);
    this.ctx.restore();
  }

  /** Extend the stroke to (x, y): dabs every SPACING diameters, pressure interpolated along the way. */
  moveTo(x, y, pressure = 1) {
    if (!this.last) return this.begin(x, y, pressure);
    const { x: x0, y: y0, pressure: p0 } = this.last;
    const distance = Math.hypot(x - x0, y - y0);
    const step = Math.max(0.5, this.brush.size * Math.min(p0, pressure) * SPACING);
    this.ctx.save();
    this.ctx.globalCompositeOperation = this.brush.erasing ? "destination-out" : "source-over";
    let walked = step - this.carry;
    while (walked <= distance) {
      const t = walked / distance;
      this._dab(x0 + (x - x0) * t, y0 + (y - y0) * t, p0 + (pressure - p0) * t);
      walked += step;
    }
    this.ctx.restore();
    this.carry = distance - (walked - step);
    this.last = { x, y, pressure };
  }

  /** Finish where the pointer lifted: the spacing may have left the last dab short of it. */
  end() {
    if (this.last && this.carry > 0.01) {
      this.ctx.save();
      this.ctx.globalCompositeOperation = this.brush.erasing ? "destination-out" : "source-over";
      this._dab(this.last.x, this.last.y, this.last.pressure);
      this.ctx.restore();
    }
    this.last = null;
    return this.bounds;
  }
}
