// What the editor holds: the source picture (never changed) and the mask, a canvas of the source's
// natural size whose alpha is the mask (opaque = repaint) in one tint colour. The tint is only for
// showing it; export.js turns the alpha into the white-on-black PNG the form posts.

export const TINT = [255, 40, 110];
export const TINT_CSS = `rgb(${TINT.join(", ")})`;

export class Layers {
  constructor() {
    this.source = null; // ImageBitmap or any drawable
    this.width = 0;
    this.height = 0;
    this.mask = document.createElement("canvas");
    this.maskCtx = this.mask.getContext("2d", { willReadFrequently: false });
  }

  get loaded() { return this.source !== null; }

  /** A new source: the mask becomes an empty canvas of its size. */
  setSource(picture) {
    this.source = picture;
    this.width = picture.width;
    this.height = picture.height;
    this.mask.width = this.width;
    this.mask.height = this.height;
  }

  /** A mask picture (white = repaint, as posted before) drawn into the mask at the source's size. */
  loadMask(picture) {
    const scratch = document.createElement("canvas");
    scratch.width = this.width;
    scratch.height = this.height;
    const ctx = scratch.getContext("2d");
    ctx.drawImage(picture, 0, 0, this.width, this.height);
    const pixels = ctx.getImageData(0, 0, this.width, this.height);
    const data = pixels.data;
    for (let i = 0; i < data.length; i += 4) {
      const painted = data[i + 3] >= 128 && (data[i] + data[i + 1] + data[i + 2]) / 3 >= 128;
      data[i] = TINT[0]; data[i + 1] = TINT[1]; data[i + 2] = TINT[2];
      data[i + 3] = painted ? 255 : 0;
    }
    this.maskCtx.putImageData(pixels, 0, 0);
  }

  snapshot(x = 0, y = 0, width = this.width, height = this.height) {
    return this.maskCtx.getImageData(x, y, width, height);
  }

  clear() {
    this.maskCtx.clearRect(0, 0, this.width, this.height);
  }

  fill() {
    this.maskCtx.save();
    this.maskCtx.globalCompositeOperation = "source-over";
    this.maskCtx.fillStyle = TINT_CSS;
    this.maskCtx.fillRect(0, 0, this.width, this.height);
    this.maskCtx.restore();
  }

  /** Painted becomes unpainted and the other way round (alpha 1 - a), without reading pixels back. */
  invert() {
    const copy = document.createElement("canvas");
    copy.width = this.width;
    copy.height = this.height;
    copy.getContext("2d").drawImage(this.mask, 0, 0);
    this.maskCtx.save();
    this.maskCtx.globalCompositeOperation = "copy";
    this.maskCtx.fillStyle = TINT_CSS;
    this.maskCtx.fillRect(0, 0, this.width, this.height);
    this.maskCtx.globalCompositeOperation = "destination-out";
    this.maskCtx.drawImage(copy, 0, 0);
    this.maskCtx.restore();
  }
}
