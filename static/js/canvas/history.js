// Undo and redo for the mask: each step keeps the pixels of the rectangle it changed, before and
// after, so a small stroke on a large image costs a small patch, not a copy of the whole mask.
// Steps past a byte budget are forgotten, oldest first.

const DEFAULT_BUDGET = 256 * 1024 * 1024; // bytes of ImageData kept across all steps

export class History {
  constructor({ budget = DEFAULT_BUDGET } = {}) {
    this.budget = budget;
    this.done = [];
    this.undone = [];
  }

  get canUndo() { return this.done.length > 0; }
  get canRedo() { return this.undone.length > 0; }

  /** Record a step: `before` and `after` are ImageData of the same rectangle at (x, y). */
  push(step) {
    this.done.push(step);
    this.undone = [];
    let bytes = this.done.reduce((sum, s) => sum + 2 * s.before.data.length, 0);
    while (bytes > this.budget && this.done.length > 1) {
      bytes -= 2 * this.done.shift().before.data.length;
    }
  }

  /** Put the last step's `before` pixels back through ctx; false when there is nothing to undo. */
  undo(ctx) {
    const step = this.done.pop();
    if (!step) return false;
    ctx.putImageData(step.before, step.x, step.y);
    this.undone.push(step);
    return true;
  }

  redo(ctx) {
    const step = this.undone.pop();
    if (!step) return false;
    ctx.putImageData(step.after, step.x, step.y);
    this.done.push(step);
    return true;
  }

  clear() {
    this.done = [];
    this.undone = [];
  }
}
