"""Batching across users: 4 compatible one-image jobs of 4 users run as one batch on the UNet
(Engine.generate_batch) against the same 4 run one after another (Engine.generate each), on the
demo model with torch pinned to 1 thread.

    .venv/bin/python benchmarks/batching.py [--users 4] [--size 128] [--steps 20] [--rounds 5]

Each user has their own prompt and seed; all use Euler a, guidance 7, previews on (VAE decode and
PNG included, as in the worker). The 4 jobs are taken as queued at the same moment: a job's
latency is from that moment to its images being ready (one after another, the last job waits for
the three before it). The rounds alternate sequential and batched after one warm-up of each, so
a drifting load hurts both alike; the table shows medians. Engine only: no Django, no database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "generation" / "engine" / "weights" / "studio-tiny"
PROMPTS = ["a red circle on a white background", "a photo of a cat", "a blue square", "a green tree in a field",
           "a yellow sun over the sea", "a black dog", "an orange house", "a purple flower"]


def sequential(engine, requests) -> list[float]:
    """Each job's latency (s) from the common start, run one after another."""
    started = time.perf_counter()
    latencies = []
    for request in requests:
        result = engine.generate(request)
        assert len(result.images) == 1
        latencies.append(time.perf_counter() - started)
    return latencies


def batched(engine, requests) -> list[float]:
    """Each job's latency (s) from the common start, run as one batch: every job's images come
    back to the worker together, when the batch returns (each decoded one after another)."""
    started = time.perf_counter()
    results = engine.generate_batch(requests)
    assert all(len(result.images) == 1 for result in results)
    return [time.perf_counter() - started] * len(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from generation.engine import Engine, GenerationRequest

    engine = Engine(MODEL, device="cpu", threads=1)
    requests = [GenerationRequest(prompt=PROMPTS[k % len(PROMPTS)], width=args.size, height=args.size,
                                  steps=args.steps, guidance_scale=7.0, sampler="euler_a", seed=1000 + k)
                for k in range(args.users)]
    sequential(engine, requests)  # warm-up
    batched(engine, requests)
    runs = {"sequential": [], "batched": []}
    for _ in range(args.rounds):
        runs["sequential"].append(sequential(engine, requests))
        runs["batched"].append(batched(engine, requests))

    load = os.getloadavg()
    print(f"Batching across users: {args.users} one-image jobs of {args.users} users, studio-tiny, "
          f"{args.size}x{args.size}, {args.steps} steps Euler a, guidance 7, previews on, torch threads "
          f"{engine.threads}, CPU; medians of {args.rounds} rounds; load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}")
    header = ("| run | images/s | total s (fastest-slowest round) | "
              + " | ".join(f"job {k + 1} latency s" for k in range(args.users)) + " |")
    print(header)
    print("|" + "---|" * (3 + args.users))
    rates = {}
    for name, rounds in runs.items():
        per_job = [statistics.median(r[k] for r in rounds) for k in range(args.users)]
        totals = [max(r) for r in rounds]
        total = statistics.median(totals)
        rates[name] = args.users / total
        print(f"| {name} | {rates[name]:.2f} | {total:.3f} ({min(totals):.3f}-{max(totals):.3f}) | "
              + " | ".join(f"{s:.3f}" for s in per_job) + " |")
    ratios = sorted(seq_total / batch_total for seq_total, batch_total in
                    zip((max(r) for r in runs["sequential"]), (max(r) for r in runs["batched"]), strict=True))
    print(f"batched / sequential images per second: {rates['batched'] / rates['sequential']:.2f} "
          f"(per round, sequential then batched: {ratios[0]:.2f} to {ratios[-1]:.2f})")


if __name__ == "__main__":
    main()
