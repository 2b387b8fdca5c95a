"""Inpainting and image to image against text to image on the demo model, same size and steps.

    python benchmarks/canvas_speed.py [--runs 7] [--steps 20]

Engine time only (what a worker spends on the job), previews on as in production, strength 1 so
every mode runs all its steps. The modes run interleaved (one of each per round), so a busy
shared CPU slows them alike; medians. One torch thread. No Django.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from generation.engine import Engine, GenerationRequest  # noqa: E402

MODEL = ROOT / "generation/engine/weights/studio-tiny"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def requests_at(size: int, steps: int) -> dict[str, GenerationRequest]:
    source = Image.new("RGB", (size, size), (30, 70, 220))
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    base = dict(prompt="a red circle in the centre on a blue background", width=size, height=size, steps=steps,
                guidance_scale=3.0, sampler="euler", seed=0)
    return {
        "txt2img": GenerationRequest(**base),
        "img2img": GenerationRequest(**base, mode="img2img", init_image=png(source), strength=1.0),
        "inpaint": GenerationRequest(**base, mode="inpaint", init_image=png(source), mask=png(mask), strength=1.0),
        "inpaint, only masked": GenerationRequest(
            **{**base, "width": size // 2, "height": size // 2}, mode="inpaint", init_image=png(source),
            mask=png(mask), strength=1.0, only_masked=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    engine = Engine(MODEL, device="cpu", threads=1)
    print(f"studio-tiny, {args.steps} Euler steps, CPU, 1 thread, median of {args.runs} interleaved runs")
    print("| size | mode | engine s | / text to image |")
    print("|---|---|---|---|")
    for size in (128, 256):
        requests = requests_at(size, args.steps)
        for request in requests.values():  # warm-up: pipelines made, caches filled
            engine.generate(request, preview_interval_s=0.1)
        times: dict[str, list[float]] = {name: [] for name in requests}
        for _ in range(args.runs):
            for name, request in requests.items():
                started = time.perf_counter()
                engine.generate(request, preview_interval_s=0.1)
                times[name].append(time.perf_counter() - started)
        base = statistics.median(times["txt2img"])
        for name, values in times.items():
            median = statistics.median(values)
            print(f"| {size} | {name} | {median:.3f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
