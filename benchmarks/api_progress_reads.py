"""Following one's own job through the API: N clients, each with its own key and its own queued job,
against a real daphne on loopback, two ways:

- polling: each client GETs /api/v1/generations/{id} every --interval seconds; the latency of a read.
- streams: each client holds GET /api/v1/generations/{id}/events open while this script publishes
  progress events for every job (--rate a second each) through the real Redis channel layer, as
  workers do (generation.events.job_progress); the delay from publishing a step to a client
  reading it.

And whether serving them slows a worker: the demo engine's time for one job, alone and while the
streams are served, the engine in a process of its own on the last CPU and daphne on the others (on
one machine, the nearest thing to a GPU host apart from the web host).

    .venv/bin/python benchmarks/api_progress_reads.py [--clients 100] [--seconds 15] [--interval 0.5] [--rate 4]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth); makes the database
`studio_api_bench` if missing (--database), migrates and seeds it afresh each run. Rate limits are
off for the run (each key polls at 1/interval per second, far under the defaults anyway). No worker
runs, so every job stays queued and each read also computes its fair-share queue position, the
dearest part of a progress read. Also times the same reads one client at a time (no contention),
and prints median, p95 and max per mode. Target from issue 12: p95 under 50 ms with 100 clients.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def setup(database: str, var_dir: Path) -> dict:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE IF EXISTS {database}"],
                   check=True, capture_output=True)
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {database}"],
                   check=True, capture_output=True)
    os.environ.update({
        "STUDIO_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "studio.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}", "STUDIO_STATIC_FROM_FINDERS": "1",
        "STUDIO_API_RATE_BURST": "0", "STUDIO_API_RATE_SUSTAINED": "0", "PYTHONUNBUFFERED": "1",
    })
    from studio.private_redis import ensure_redis_url

    redis = ensure_redis_url(var_dir / "redis")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return {"redis": redis}


def seed(clients: int) -> list[tuple[str, str]]:
    from django.contrib.auth import get_user_model

    from accounts import services as accounts
    from billing.services import credits_adjust
    from generation import services

    staff = get_user_model().objects.create_user(username="bench-staff", email="staff@bench.example", is_staff=True)
    pairs = []
    for n in range(clients):
        user = get_user_model().objects.create_user(username=f"bench{n}", email=f"bench{n}@bench.example")
        credits_adjust(user=user, amount=100, actor=staff, reason="bench", idempotency_key=f"bench-{n}")
        job = services.job_submit(user=user, prompt="a red circle", negative_prompt="", width=64, height=64, steps=4,
                                  guidance_scale=7.0, sampler="euler", seed=n, num_images=1)
        _, token = accounts.api_key_create(actor=user, name="bench", scopes=["read_images"])
        pairs.append((str(job.pk), token))
    return pairs


def start_daphne(port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "studio.asgi:application"],
        cwd=BASE_DIR, env=dict(os.environ), stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=1)
            return process
        except requests.RequestException:  # not up yet, or slow to build the schema
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"daphne did not start:\n{log.read_text()[-2000:]}")


def poll(base: str, pairs, *, seconds: float, interval: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = threading.Barrier(len(pairs))

    def client(job_id: str, token: str) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        url = f"{base}/api/v1/generations/{job_id}"
        start.wait()
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            began = time.perf_counter()
            response = session.get(url, timeout=30)
            took = time.perf_counter() - began
            with lock:
                latencies.append(took)
                if response.status_code != 200 or response.json()["id"] != job_id:
                    errors[0] += 1
            time.sleep(max(interval - took, 0))

    threads = [threading.Thread(target=client, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0]


def follow_streams(base: str, pairs, *, seconds: float, rate: float) -> tuple[list[float], int]:
    """Every client opens its job's event stream; the publisher sends a step per job `rate` times a
    second; each client notes when it reads each step. Returns the publish-to-read delays."""
    from generation import events

    sent: dict[tuple[str, int], float] = {}
    received: list[tuple[str, int, float]] = []
    errors = [0]
    lock = threading.Lock()
    ready = threading.Barrier(len(pairs) + 1)

    def client(job_id: str, token: str) -> None:
        try:
            with requests.get(f"{base}/api/v1/generations/{job_id}/events", stream=True, timeout=seconds + 30,
                              headers={"Authorization": f"Bearer {token}"}) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
                lines = response.iter_lines(decode_unicode=True)
                while not (next(lines) or "").startswith("data:"):  # the snapshot: subscribed from here on
                    pass
                ready.wait()
                event = ""
                for line in lines:
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "progress":
                        step = int(line.split('"step":', 1)[1].split(",", 1)[0])
                        with lock:
                            received.append((job_id, step, time.perf_counter()))
                        if step >= stop_step:
                            return
        except Exception as error:  # noqa: BLE001 - counted, not fatal: the table says how many failed
            print(f"stream client {job_id[:8]}: {error!r}", file=sys.stderr)
            with lock:
                errors[0] += 1
            ready.abort()

    stop_step = max(int(seconds * rate), 1)
    threads = [threading.Thread(target=client, args=pair, daemon=True) for pair in pairs]
    for thread in threads:
        thread.start()
    ready.wait(timeout=120)
    for step in range(1, stop_step + 1):
        tick = time.perf_counter()
        for job_id, _ in pairs:
            sent[(job_id, step)] = time.perf_counter()
            events.job_progress(job_id=job_id, step=step, total_steps=stop_step, elapsed=step / rate, preview=None)
        time.sleep(max(1 / rate - (time.perf_counter() - tick), 0))
    for thread in threads:
        thread.join(30)
    delays = [at - sent[(job_id, step)] for job_id, step, at in received if (job_id, step) in sent]
    errors[0] += len(pairs) * stop_step - len(delays)  # steps never read
    return delays, errors[0]


def engine_seconds(runs: int) -> dict[str, list[float]]:
    """The demo engine's time for one small job, in a worker-like process of its own (1 torch
    thread) pinned to the last CPU, while this process and daphne keep to the others. Alternating:
    `quiet` (progress goes nowhere) and `publishing` (every step published as the worker does:
    events.job_progress, into the shared cache and the job's channel group, previews included)."""
    cpus = sorted(os.sched_getaffinity(0))
    code = (
        "import base64, json, os, time, uuid; os.sched_setaffinity(0, {%d}); import django; django.setup()\n"
        "import torch; torch.set_num_threads(1)\n"
        "from generation import events\n"
        "from generation.engine.contracts import GenerationRequest\n"
        "from generation.worker import engine\n"
        "request = GenerationRequest(prompt='a red circle', width=128, height=128, steps=12, sampler='euler', seed=1)\n"
        "job_id = uuid.uuid4()\n"
        "def publish(update):\n"
        "    preview = update.preview_png and 'data:%%s;base64,%%s' %% (update.preview_mime, "
        "base64.b64encode(update.preview_png).decode())\n"
        "    events.job_progress(job_id=job_id, step=update.step, total_steps=update.total_steps, elapsed=0.1, "
        "preview=preview or None)\n"
        "loaded = engine(); loaded.generate(request, on_step=publish)\n"
        "times = {'quiet': [], 'publishing': []}\n"
        "for _ in range(%d):\n"
        "    for name, hook in (('quiet', lambda update: None), ('publishing', publish)):\n"
        "        began = time.perf_counter(); loaded.generate(request, on_step=hook)\n"
        "        times[name].append(time.perf_counter() - began)\n"
        "print(json.dumps(times))\n"
    ) % (cpus[-1], runs)
    done = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=dict(os.environ), capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def row(name: str, latencies: list[float], errors: int) -> str:
    ms = sorted(x * 1000 for x in latencies)
    p95 = ms[int(len(ms) * 0.95) - 1] if ms else float("nan")
    return f"| {name} | {len(ms)} | {errors} | {statistics.median(ms):.1f} | {p95:.1f} | {ms[-1]:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--rate", type=float, default=4, help="progress events a second per job (streams)")
    parser.add_argument("--engine-runs", type=int, default=5)
    parser.add_argument("--database", default="studio_api_bench")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:  # the web side (this process, its threads, daphne) off the engine's CPU
        os.sched_setaffinity(0, set(cpus[:-1]))
    var_dir = Path(tempfile.mkdtemp(prefix="studio-api-bench-"))
    started = setup(args.database, var_dir)
    pairs = seed(args.clients)
    from studio.private_redis import free_port

    port = free_port()
    daphne = start_daphne(port, var_dir / "daphne.log")
    try:
        base = f"http://127.0.0.1:{port}"
        alone = poll(base, pairs[:1], seconds=min(args.seconds, 5), interval=0)
        together = poll(base, pairs, seconds=args.seconds, interval=args.interval)
        one_stream = follow_streams(base, pairs[:1], seconds=min(args.seconds, 5), rate=args.rate)
        streams = follow_streams(base, pairs, seconds=args.seconds, rate=args.rate)
        engine_alone = engine_seconds(args.engine_runs)
        served: list = []
        serving = threading.Thread(target=lambda: served.append(
            follow_streams(base, pairs, seconds=args.seconds * 2, rate=args.rate)))
        serving.start()
        time.sleep(2)
        engine_busy = engine_seconds(args.engine_runs)
        serving.join()
    finally:
        daphne.terminate()
        daphne.wait(10)
        if started["redis"] is not None:
            started["redis"].stop()
    print(f"GET /api/v1/generations/{{id}}, {args.clients} queued jobs, PostgreSQL, one daphne, loopback")
    print("| mode | requests | errors | median ms | p95 ms | max ms |")
    print("|---|---|---|---|---|---|")
    print(row("1 client, back to back", *alone))
    print(row(f"{args.clients} clients, each every {args.interval} s", *together))
    print(row("stream: 1 client, publish to read", *one_stream))
    print(row(f"stream: {args.clients} clients, {args.rate:g} steps/s each, publish to read", *streams))
    print()
    print(f"Demo engine, one 128 px 12-step job, medians of {args.engine_runs}, in its own process on the last vCPU "
          "(daphne and the clients on the others)")
    quiet = statistics.median(engine_alone["quiet"])
    rows = [("progress going nowhere", quiet), ("every step published (the worker's own part)",
                                                statistics.median(engine_alone["publishing"])),
            (f"published, while the other vCPU serves {args.clients} streams",
             statistics.median(engine_busy["publishing"]))]
    print("| engine | median s | / going nowhere |")
    print("|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {seconds / quiet:.3f} |")


if __name__ == "__main__":
    main()
