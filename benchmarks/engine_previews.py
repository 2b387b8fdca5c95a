"""Live previews: how close each frame comes to the final image, and what previews cost.

    python benchmarks/engine_previews.py [--model DIR] [--samplers euler dpmpp_2m] [--seeds 2]
                                         [--reps 5] [--sizes 128] [--threads 1]

Default model: the shipped studio-tiny (--model demo: the random demo model, built if needed).

1. Convergence. For each sampler, every prompt x seed is run for --steps steps at the native size
   with a frame on every step. The table gives, per step, the mean colour distance of that step's
   frame to the final image (0-255 per channel, the frame scaled bilinearly to the image's size as
   the browser shows it: previews.frame_distance), averaged over the runs, for the engine's own
   previewer and, on the same runs, for the linear latent->RGB factors (the previewer studio-tiny
   had before its trained decoder).
2. Cost. Engine.generate() with previews off, on (the default throttle, at most one frame per
   0.1 s) and on every step; runs interleaved (off, on, every step, off, ...) so a noisy, shared
   CPU hurts all variants alike; medians of engine_seconds. "frames x frame cost" is the overhead
   without timing noise: one frame (denoised latents -> RGB, grid, WebP) timed alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = ROOT / "generation" / "engine" / "weights" / "studio-tiny"
DEMO_MODEL = ROOT / "var" / "cache" / "bench-demo-model"
PROMPTS = (
    "a red circle on a blue background",
    "a large yellow star in the top left, black background",
    "a green heart and a white square on a purple background",
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder, or 'demo' (default: the shipped studio-tiny)")
    parser.add_argument("--samplers", nargs="+", default=["euler", "dpmpp_2m"])
    parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt (3 prompts)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="+", help="sizes for the cost table (default: native)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: steadier on a shared CPU; 0 = torch's default)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--skip-convergence", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from generation.engine import Engine
    from generation.engine.demo_model import build

    if args.model == "demo":
        model = build(DEMO_MODEL)
    else:
        model = Path(args.model) if args.model else SHIPPED_MODEL
    started = time.perf_counter()
    engine = Engine(model, device=args.device, threads=args.threads)
    load_s = time.perf_counter() - started
    print(f"model {engine.info.name} ({engine.info.hash}) on {engine.device} {engine.dtype}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {load_s:.2f} s, "
          f"preview method {engine.preview_method}, {args.steps} steps")
    if not args.skip_convergence:
        convergence(engine, args)
    cost(engine, args)
    return 0


# -- 1. convergence -------------------------------------------------------------------------------


def convergence(engine, args) -> None:
    from generation.engine import GenerationRequest
    from generation.engine.previews import LinearPreviewer, frame_distance

    previewers = {engine.preview_method: engine._previewer}
    if engine.preview_method != "linear" and engine.info.latent_rgb_factors is not None:
        previewers["linear"] = LinearPreviewer(engine.info.latent_rgb_factors, engine.info.latent_rgb_bias,
                                               engine.device)
    own = engine._previewer
    size = engine.info.native_width, engine.info.native_height
    frame_size = ""
    for sampler in args.samplers:
        distances = {name: [[] for _ in range(args.steps)] for name in previewers}
        for name, previewer in previewers.items():
            engine._previewer = previewer
            for prompt in PROMPTS:
                for seed in range(1, args.seeds + 1):
                    request = GenerationRequest(prompt=prompt, width=size[0], height=size[1],
                                                steps=args.steps, sampler=sampler, seed=seed,
                                                guidance_scale=engine.info.default_guidance_scale)
                    updates = []
                    result = engine.generate(request, on_step=updates.append, preview_interval_s=0.0)
                    for step, update in enumerate(updates):
                        distances[name][step].append(frame_distance(update.preview_png, result.images[0].png))
                    if previewer is own:
                        frame_size = frame_pixels(updates[-1].preview_png)
        engine._previewer = own
        print_convergence(sampler, distances, args, frame_size)


def frame_pixels(frame: bytes) -> str:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(frame)) as picture:
        return f"{picture.width}x{picture.height}"


def print_convergence(sampler, distances, args, frame_size) -> None:
    names = list(distances)
    runs = len(distances[names[0]][0])
    print(f"\nConvergence, sampler {sampler}: mean colour distance of the frame after each step to the final "
          f"image (0-255), mean of {runs} runs ({len(PROMPTS)} prompts x {args.seeds} seeds); "
          f"{names[0]} frames are {frame_size}\n")
    print("| step | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for step in range(args.steps):
        cells = [f"{statistics.mean(distances[n][step]):.1f}" for n in names]
        print(f"| {step + 1} | " + " | ".join(cells) + " |")
    third = max(1, args.steps // 3)
    for label, pick in (("first third", slice(0, third)), ("last third", slice(-third, None))):
        cells = [statistics.mean(d for step in distances[n][pick] for d in step) for n in names]
        print(f"| {label} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")


# -- 2. cost --------------------------------------------------------------------------------------


def cost(engine, args) -> None:
    from generation.engine import GenerationRequest

    sizes = args.sizes or [engine.info.native_width]
    variants = {"off": dict(previews=False), "on": dict(previews=True, preview_interval_s=0.1),
                "every step": dict(previews=True, preview_interval_s=0.0)}
    rows = []
    for size in sizes:
        request = GenerationRequest(prompt=PROMPTS[0], width=size, height=size, steps=args.steps,
                                    guidance_scale=engine.info.default_guidance_scale, sampler="euler_a",
                                    seed=1)
        engine.generate(request, previews=True)  # warm-up
        times = {name: [] for name in variants}
        cpu_times = {name: [] for name in variants}
        frames = {name: 0 for name in variants}
        frame_bytes = []
        for _ in range(args.reps):
            for name, kwargs in variants.items():
                updates = []
                cpu_started = time.process_time()
                result = engine.generate(request, on_step=updates.append, **kwargs)
                cpu_times[name].append(time.process_time() - cpu_started)
                times[name].append(result.engine_seconds)
                got = [u.preview_png for u in updates if u.preview_png]
                frames[name] = len(got)
                frame_bytes += [len(f) for f in got]
        med = {name: statistics.median(t) for name, t in times.items()}
        cpu = {name: statistics.median(t) for name, t in cpu_times.items()}
        rows.append((size, med, cpu, frames, statistics.median(frame_bytes) if frame_bytes else 0,
                     frame_cost_ms(engine, size)))

    print(f"\nCost ({engine.preview_method} previews), {args.reps} reps, sampler Euler a\n")
    print("| size | previews off (s) | on (s) | ratio on/off | CPU-time ratio | frames | every step (s) "
          "| ratio | CPU-time ratio | frame cost | frame size |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size, med, cpu, frames, frame_size, cost_ms in rows:
        print(f"| {size}x{size} | {med['off']:.3f} | {med['on']:.3f} | {med['on'] / med['off']:.3f} "
              f"| {cpu['on'] / cpu['off']:.3f} | {frames['on']} | {med['every step']:.3f} "
              f"| {med['every step'] / med['off']:.3f} | {cpu['every step'] / cpu['off']:.3f} "
              f"| {cost_ms:.2f} ms | {frame_size:.0f} B |")
    print()
    print("Times are medians of engine_seconds (wall); CPU-time ratios use this process's CPU time,")
    print("steadier than wall time on a shared CPU (meaningless on a GPU). Previews as a share of the")
    print("job, from frames x frame cost (no timing noise):")
    for size, med, _, frames, _, cost_ms in rows:
        for name in ("on", "every step"):
            print(f"  {size}x{size} {name}: {frames[name]} frames x {cost_ms:.2f} ms = "
                  f"{100 * frames[name] * cost_ms / 1000 / med['off']:.2f} % of {med['off']:.3f} s")


def frame_cost_ms(engine, size: int, num_images: int = 1) -> float:
    """Median time of one preview frame, as the engine makes it, on latents of this size."""
    import torch

    from generation.engine.previews import encode_frame, grid

    previewer = engine._previewer
    if previewer is None:
        return 0.0
    scale = engine.info.vae_scale_factor
    latents = torch.randn(num_images, engine.info.latent_channels, size // scale, size // scale,
                          device=engine.device, dtype=engine.dtype)
    samples = []
    for _ in range(200):
        t = time.perf_counter()
        encode_frame(grid(previewer(latents)))
        samples.append(time.perf_counter() - t)
    return 1000 * statistics.median(samples)


if __name__ == "__main__":
    sys.exit(main())
