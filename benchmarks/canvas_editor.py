"""Mask editor responsiveness in Chromium: time per brush stroke segment on a 2048x2048 picture.

    python benchmarks/canvas_editor.py [--size 2048] [--segments 600] [--brush 60]

Serves static/js/canvas/ and a small harness page from a local HTTP server (ES modules do not
load from file://), opens it in Debian's Chromium (the house flags, software rendering), loads
a size x size picture into the real MaskEditor and times, inside the page, the work one
pointermove does: Stroke.moveTo for a segment of ~12 image pixels (the dabs it lays on the
mask) plus one frame of the view (the picture and the tinted mask drawn scaled). Also timed:
the mask export (greyscale PNG) and one undo of a long stroke. Target: a segment under 4 ms, so
drawing stays at 60 fps. No Django.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import shutil
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.browser_fixtures import CHROMIUM_ARGS, _chromium_path

HARNESS = """<!doctype html><meta charset="utf-8"><title>editor bench</title>
<link rel="stylesheet" href="canvas.css">
<div class="mask-editor" data-mask-editor data-mode="inpaint">
  <div class="mask-viewport" data-editor-viewport><canvas class="mask-view" data-editor-view></canvas></div>
</div>
<script type="module" src="bench.js"></script>
"""

BENCH_JS = """
import { MaskEditor } from "./js/canvas/editor.js";
import { Stroke } from "./js/canvas/brush.js";
import { maskPng } from "./js/canvas/export.js";

window.runBench = async ({ size, segments, brush }) => {
  const editor = new MaskEditor(document.querySelector("[data-mask-editor]"));
  const picture = document.createElement("canvas");
  picture.width = picture.height = size;
  const ctx = picture.getContext("2d");
  const gradient = ctx.createLinearGradient(0, 0, size, size);
  gradient.addColorStop(0, "#2040c0"); gradient.addColorStop(1, "#c04080");
  ctx.fillStyle = gradient; ctx.fillRect(0, 0, size, size);
  editor.setSource(await createImageBitmap(picture));
  editor.setBrushSize(brush);
  await new Promise(requestAnimationFrame);

  const times = [], frames = [];
  const stroke = new Stroke(editor.layers.maskCtx, editor.brush);
  stroke.begin(100, 100);
  let x = 100, y = 100, angle = 0;
  for (let i = 0; i < segments; i++) {
    angle += 0.05;
    x = Math.min(size - 100, Math.max(100, x + 12 * Math.cos(angle)));
    y = Math.min(size - 100, Math.max(100, y + 12 * Math.sin(angle * 0.7) + 1));
    let started = performance.now();
    stroke.moveTo(x, y, 1);
    editor.layers.maskCtx.getImageData(0, 0, 1, 1); // wait for the dabs to be drawn, not just queued
    times.push(performance.now() - started);
    started = performance.now();
    editor._draw();                                 // the frame the move schedules (one per display frame)
    editor.ctx.getImageData(0, 0, 1, 1);
    frames.push(performance.now() - started);
  }
  stroke.end();
  const quantiles = (list) => {
    list.sort((a, b) => a - b);
    const pick = (q) => list[Math.min(list.length - 1, Math.floor(q * list.length))];
    return { median: pick(0.5), p95: pick(0.95), max: list[list.length - 1] };
  };

  // Undo of one long stroke across the whole picture, and the export.
  editor._beginStroke({ x: 50, y: 50 }, 1);
  for (let i = 1; i <= 200; i++) editor.gesture.stroke.moveTo(50 + i * (size - 100) / 200, 50 + i * (size - 100) / 200, 1);
  editor._endStroke();
  let started = performance.now();
  editor.undo(); editor._draw(); editor.ctx.getImageData(0, 0, 1, 1);
  const undo = performance.now() - started;
  editor.fill();
  started = performance.now();
  const png = await maskPng(editor.layers.mask);
  const exportMs = performance.now() - started;
  return { segment: quantiles(times), frame: quantiles(frames), undo, exportMs, pngBytes: png.size };
};
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--segments", type=int, default=600)
    parser.add_argument("--brush", type=int, default=60)
    args = parser.parse_args()
    chromium = _chromium_path()
    if chromium is None:
        print("Chromium is not installed", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        shutil.copytree(ROOT / "static" / "js" / "canvas", site / "js" / "canvas")
        shutil.copy(ROOT / "static" / "css" / "canvas.css", site / "canvas.css")
        (site / "index.html").write_text(HARNESS)
        (site / "bench.js").write_text(BENCH_JS)
        handler = functools.partial(QuietHandler, directory=tmp)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
                page.wait_for_function("() => typeof window.runBench === 'function'")
                result = page.evaluate("(options) => window.runBench(options)",
                                       {"size": args.size, "segments": args.segments, "brush": args.brush})
                version = browser.version
                browser.close()
        finally:
            server.shutdown()

    print(f"Chromium {version} (--disable-gpu), {args.size}x{args.size} picture, {args.brush} px brush, "
          f"{args.segments} segments of ~12 px")
    print(f"{'measure':<40}{'median':>8}{'p95':>8}{'max':>8}  (ms)")
    for label, key in (("stroke segment (dabs on the mask)", "segment"), ("view frame (picture + mask)", "frame")):
        row = result[key]
        print(f"{label:<40}{row['median']:>8.2f}{row['p95']:>8.2f}{row['max']:>8.2f}")
    print(f"{'undo of a long stroke':<40}{result['undo']:>8.2f}")
    print(f"{'mask export (greyscale PNG)':<40}{result['exportMs']:>8.2f}")
    met = result["segment"]["p95"] < 4
    print(f"target: a stroke segment under 4 ms (p95) -> {'met' if met else 'MISSED'}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
