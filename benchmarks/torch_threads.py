"""Torch threads for the worker: 20 steps of studio-tiny with 1 and 2 threads, idle and beside a
busy process, side by side in one run.

    python benchmarks/torch_threads.py [--threads 1 2] [--reps 3] [--steps 20] [--busy 1]

Each measurement is a fresh process that loads the Engine with ``threads=N`` (what the worker does
with STUDIO_TORCH_THREADS), warms up, then times Engine.generate() (128x128, Euler, guidance 3,
previews on, VAE decode and PNG included). "busy" runs it while --busy other processes spin on
the CPU, as the web process, Redis and other work do on a small machine. The rounds are
interleaved (1 idle, 1 busy, 2 idle, 2 busy, 1 idle, ...) so a drifting load hurts every
column alike; the table shows medians and the fastest and slowest run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "generation" / "engine" / "weights" / "studio-tiny"


def spin() -> None:
    while True:
        pass


def child(threads: int, steps: int, model: str) -> None:
    """One measurement, in its own process: print the engine seconds of one generation as JSON."""
    sys.path.insert(0, str(ROOT))
    from generation.engine import Engine, GenerationRequest

    engine = Engine(model, device="cpu", threads=threads)
    request = GenerationRequest(prompt="a red circle on a blue background", width=128, height=128,
                                steps=steps, guidance_scale=3.0, sampler="euler", seed=1)
    engine.generate(GenerationRequest(prompt="warm up", width=128, height=128, steps=2))
    result = engine.generate(request)
    print(json.dumps({"threads": engine.threads, "seconds": result.engine_seconds}))


def measure(threads: int, steps: int, model: str, busy: int) -> float:
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
    for p in spinners:
        p.start()
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        out = subprocess.run([sys.executable, __file__, "--child", str(threads), "--steps", str(steps),
                              "--model", model], env=env, capture_output=True, text=True, check=True,
                             timeout=900)
    finally:
        for p in spinners:
            p.terminate()
            p.join()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["threads"] == threads, result
    return result["seconds"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--busy", type=int, default=1, help="spinning processes beside the busy runs")
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child, args.steps, args.model)
        return 0

    print(f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f} at start; model {args.model}; "
          f"{args.steps} steps, {args.reps} reps; busy = {args.busy} spinning process(es)")
    columns = [(t, b) for t in args.threads for b in (0, args.busy)]
    times: dict = {c: [] for c in columns}
    for rep in range(args.reps):
        for threads, busy in columns:
            seconds = measure(threads, args.steps, args.model, busy)
            times[(threads, busy)].append(seconds)
            state = "busy" if busy else "idle"
            print(f"  rep {rep + 1}: {threads} thread(s), {state}: {seconds:.2f} s", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end\n")
    print("| torch threads | idle: median (min-max) | beside a busy process: median (min-max) |")
    print("|---|---|---|")
    for threads in args.threads:
        cells = []
        for busy in (0, args.busy):
            t = times[(threads, busy)]
            cells.append(f"{statistics.median(t):.2f} s ({min(t):.2f}-{max(t):.2f})")
        print(f"| {threads} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    if "--child" not in sys.argv:
        print(f"\n(benchmark took {time.perf_counter() - started:.0f} s)")
    sys.exit(code)
