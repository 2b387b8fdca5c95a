"""Frames per second that each viewer of one job receives, with 1 and with many viewers.

    .venv/bin/python benchmarks/websocket_fanout.py [--viewers 1 100] [--rate 20] [--seconds 5]

Starts a private Redis and daphne on a fresh SQLite database, signs a user in, opens N
websockets on one of their jobs, then publishes `job.progress` events (with a preview frame the
size of a real one) at --rate per second through the channel layer, as a worker does. Prints,
per viewer count, the median and the slowest viewer's frames per second and how many frames
were lost. Every socket must receive every frame at the rate they were sent.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from e2e_latency import BASE_DIR, setup_environment  # this folder is on sys.path when run as a script


async def watch(url: str, headers: dict, frames: int, ready: asyncio.Event,
                opened: list) -> tuple[int, float]:
    """Receive until `frames` progress frames arrived (or 10 s of silence); (count, seconds)."""
    import websockets

    async with websockets.connect(url, additional_headers=headers, max_size=None) as socket:
        await socket.recv()  # the current state
        opened.append(1)
        await ready.wait()
        count, first, last = 0, None, None
        while count < frames:
            try:
                message = await asyncio.wait_for(socket.recv(), timeout=10)
            except TimeoutError:
                break
            if "data-progress-text" in message or "job-progress-" in message:
                count += 1
                last = time.perf_counter()
                first = first or last
        return count, (last - first) if count > 1 else 0.0


async def run_round(url: str, headers: dict, viewers: int, rate: float, seconds: float, publish) -> dict:
    ready, opened = asyncio.Event(), []
    frames = int(rate * seconds)
    tasks = [asyncio.create_task(watch(url, headers, frames, ready, opened)) for _ in range(viewers)]
    while len(opened) < viewers:
        await asyncio.sleep(0.05)
    ready.set()
    await asyncio.to_thread(publish, frames, rate)
    results = await asyncio.gather(*tasks)
    per_viewer = [(count - 1) / span if span else 0.0 for count, span in results]
    return {"viewers": viewers, "sent": frames, "median_fps": statistics.median(per_viewer),
            "slowest_fps": min(per_viewer), "lost": sum(frames - count for count, _ in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--rate", type=float, default=20.0, help="frames published per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    var_dir = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    setup_environment(var_dir)
    import subprocess

    from studio.private_redis import ensure_redis_url

    redis = ensure_redis_url(var_dir / "redis")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], check=True, cwd=BASE_DIR)
    import django

    django.setup()
    from allauth.account.models import EmailAddress
    from django.conf import settings

    from generation import events
    from tests.e2e.conftest import WebUser
    from tests.factories import make_user, submit_job
    from tests.live_stack import LiveStack, stack_environment

    password = "Bench-Studio-123"
    user = make_user(credits=100000, password=password)
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    job = submit_job(user)
    # A frame as large as a 128x128 WebP preview.
    preview = "data:image/webp;base64," + base64.b64encode(os.urandom(6000)).decode()

    def publish(frames: int, rate: float) -> None:
        started = time.perf_counter()
        for step in range(1, frames + 1):
            events.job_progress(job_id=job.pk, step=step, total_steps=frames, elapsed=step / rate,
                                preview=preview)
            time.sleep(max(0.0, started + step / rate - time.perf_counter()))

    database_url = f"sqlite:///{settings.DATABASES['default']['NAME']}"
    stack = LiveStack(env=stack_environment(database_url=database_url), log_dir=var_dir / "logs")
    rows = []
    try:
        stack.start_web()
        web_user = WebUser(stack, user.email, password)
        headers = {"Cookie": web_user.cookie_header, "Origin": stack.base_url}
        url = f"{stack.ws_url}/ws/jobs/{job.pk}/"
        for viewers in args.viewers:
            rows.append(asyncio.run(run_round(url, headers, viewers, args.rate, args.seconds, publish)))
    finally:
        stack.stop()
        if redis:
            redis.stop()
    print(f"\nOne job's progress frames, published at {args.rate:g}/s for {args.seconds:g} s (this machine)")
    print("viewers | frames sent | median frames/s per viewer | slowest viewer | frames lost (all viewers)")
    print("---|---|---|---|---")
    for row in rows:
        print(f"{row['viewers']} | {row['sent']} | {row['median_fps']:.1f} | {row['slowest_fps']:.1f} | "
              f"{row['lost']}")


if __name__ == "__main__":
    main()
