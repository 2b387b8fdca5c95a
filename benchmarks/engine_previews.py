"""Cost of live previews: Engine time with previews on vs off, demo model, 20 steps.

    python benchmarks/engine_previews.py [--model DIR] [--reps 5] [--sizes 256 512] [--threads 1]

Builds the demo model (cached) unless --model names a model folder. Runs are interleaved
(off, on, every-step, off, on, ...) so a noisy, shared CPU hurts all variants alike; the table
shows medians of Engine.generate()'s engine_seconds and the on/off ratio (target <= 1.05).
"previews on" is the default throttle (one frame per 0.1 s at most); "every step" forces a frame
on each of the 20 steps, the worst case.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "var" / "cache" / "bench-demo-model"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: the demo model, built if needed)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: steadier on a shared CPU; 0 = torch's default)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from generation.engine import Engine, GenerationRequest
    from generation.engine.demo_model import build

    model = Path(args.model) if args.model else build(DEFAULT_MODEL)
    started = time.perf_counter()
    engine = Engine(model, device=args.device)
    load_s = time.perf_counter() - started
    print(f"model {engine.info.name} ({engine.info.hash}) on {engine.device} {engine.dtype}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {load_s:.2f} s, "
          f"preview method {engine.preview_method}, {args.reps} reps, {args.steps} steps")

    variants = {"off": dict(previews=False), "on": dict(previews=True, preview_interval_s=0.1),
                "every step": dict(previews=True, preview_interval_s=0.0)}
    rows = []
    for size in args.sizes:
        request = GenerationRequest(prompt="a castle on a hill, oil painting", width=size, height=size,
                                    steps=args.steps, sampler="euler_a", seed=1)
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

    print()
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
    print("steadier than wall time on a shared CPU (meaningless on a GPU). frame cost: one preview")
    print("frame (x0 -> RGB, grid, encode) timed alone, median of 200; frames x frame cost / off time")
    print("is the overhead without any timing noise:")
    for size, med, _, frames, _, cost_ms in rows:
        print(f"  {size}x{size}: {frames['on']} frames x {cost_ms:.2f} ms = "
              f"{100 * frames['on'] * cost_ms / 1000 / med['off']:.2f} % of {med['off']:.3f} s")
    return 0


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
