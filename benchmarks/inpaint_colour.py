"""Inpainting on the demo model: does the repainted area match its surroundings, and is the
rest of the picture kept? Plain diffusers (the 4-channel latent-blend pipeline) against the
Engine (the same pipeline, then composited over the source with the blurred mask).

    python benchmarks/inpaint_colour.py [--seeds 16]

For each seed it repaints a 56x56 square of a flat background with "a blue background" (so the
square should vanish) and measures, per picture:
- edge ΔRGB: the largest per-channel difference between the mean colour of a 4-pixel band just
  inside the mask's edge and one just outside it (0 = seamless);
- inside ΔL: mean luma inside the mask minus outside it (negative = darker);
- outside change: mean |Δ| of the pixels beyond the mask and its blur against the source (0 = kept).
Prints a table of means over the seeds. One torch thread (a shared CPU). No Django.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from generation.engine import Engine, GenerationRequest  # noqa: E402
from generation.engine.training import dataset  # noqa: E402
from generation.engine.training.dataset import Obj, Scene  # noqa: E402

MODEL = ROOT / "generation/engine/weights/studio-tiny"
BOX = (36, 36, 92, 92)
LUMA = np.array([0.299, 0.587, 0.114])


def measure(picture: np.ndarray, source: np.ndarray) -> tuple[float, float, float]:
    left, top, right, bottom = BOX
    inside_band = picture[top + 8 : bottom - 8, left + 1 : left + 5].reshape(-1, 3).mean(0)
    outside_band = picture[top + 8 : bottom - 8, left - 16 : left - 12].reshape(-1, 3).mean(0)
    inside = picture[top:bottom, left:right].reshape(-1, 3).mean(0)
    far = np.ones(picture.shape[:2], bool)
    far[top - 14 : bottom + 14, left - 14 : right + 14] = False
    outside_mean = picture[far].mean(0)
    return (float(np.abs(inside_band - outside_band).max()), float((inside - outside_mean) @ LUMA),
            float(np.abs(picture[far] - source[far]).mean()))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from diffusers import StableDiffusionInpaintPipeline

    engine = Engine(MODEL, device="cpu", threads=1)
    plain = StableDiffusionInpaintPipeline.from_pipe(engine.pipe)
    plain.set_progress_bar_config(disable=True)
    source = dataset.render(Scene((Obj("square", "green", "small", "top left", 24, 24),), "blue"))
    mask = Image.new("L", source.size, 0)
    mask.paste(255, BOX)
    source_pixels = np.asarray(source, dtype=np.float32)
    rows = {}
    for strength, content in ((1.0, "original"), (0.75, "original"), (1.0, "fill")):
        plain_scores, engine_scores = [], []
        for seed in range(args.seeds):
            image = plain("a blue background", image=source, mask_image=mask, strength=strength,
                          num_inference_steps=20, guidance_scale=3.0,
                          generator=torch.Generator().manual_seed(seed)).images[0]
            plain_scores.append(measure(np.asarray(image, dtype=np.float32), source_pixels))
            request = GenerationRequest(prompt="a blue background", width=128, height=128, steps=20,
                                        guidance_scale=3.0, sampler="euler", seed=seed, mode="inpaint",
                                        init_image=png(source), mask=png(mask), strength=strength,
                                        masked_content=content)
            picture = engine.generate(request, previews=False).images[0].png
            engine_scores.append(measure(np.asarray(Image.open(io.BytesIO(picture)).convert("RGB"),
                                                    dtype=np.float32), source_pixels))
        label = f"strength {strength}, {content}"
        if content == "original":
            rows[f"diffusers, {label}"] = np.mean(plain_scores, axis=0)
        rows[f"engine, {label}"] = np.mean(engine_scores, axis=0)
    print(f"studio-tiny, {args.seeds} seeds, 20 Euler steps, guidance 3, 128x128, mask {BOX}")
    print(f"| {'run':<34} | edge ΔRGB | inside ΔL | outside change |")
    print(f"|{'-' * 36}|-----------|-----------|----------------|")
    for name, (edge, luma, kept) in rows.items():
        print(f"| {name:<34} | {edge:9.2f} | {luma:+9.2f} | {kept:14.3f} |")


if __name__ == "__main__":
    main()
