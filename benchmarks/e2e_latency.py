"""End-to-end latency of one job on the real stack, against the engine alone.

    .venv/bin/python benchmarks/e2e_latency.py [--runs 3] [--sizes 256 512] [--steps 20]
    .venv/bin/python benchmarks/e2e_latency.py --fixed-cost [--runs 15] [--sizes 128 256] [--steps 4]

Starts a private Redis, migrates a fresh SQLite database in a temporary var dir, starts daphne
and one Celery worker (solo pool), signs a user in over HTTP, then for each size:
  (a) submit (HTTP POST of the Create form) -> the client sees SUCCEEDED on the websocket,
      divided by the engine-only time for the same settings (target <= 1.10 at 512x512);
  (b) engine time with previews on over off (target <= 1.05);
  (c) submit -> the first preview frame on the websocket.
The engine-only numbers come from this process, with the same model and settings, while the
stack is idle. Medians of --runs runs after one warm-up each.

--fixed-cost measures what a job costs outside the engine (issue 13: under 50 ms): submit -> the
client sees SUCCEEDED, minus the engine time the worker itself recorded for that job
(Job.engine_seconds), split by the job's own timestamps into: the HTTP submit (POST to its
response), waiting (commit -> claimed: the wake-up message and the claim), the worker's own work
around the engine (claimed -> finished, minus the engine: heartbeat, reading the job, storing the
PNG and thumbnail, the final transaction) and the SUCCEEDED event's way to the client.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def setup_environment(var_dir: Path) -> None:
    os.environ["STUDIO_VAR_DIR"] = str(var_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "studio.settings"
    os.environ["STUDIO_STATIC_FROM_FINDERS"] = "1"
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("STUDIO_MODEL_PATH", str(BASE_DIR / "var" / "cache" / "test-demo-model"))


def prepare(var_dir: Path):
    """A fresh studio in `var_dir`: its private Redis (returned, to stop), the demo model, a migrated
    SQLite database, Django set up in this process."""
    setup_environment(var_dir)
    import subprocess

    from studio.private_redis import ensure_redis_url

    redis = ensure_redis_url(var_dir / "redis")
    if not Path(os.environ["STUDIO_MODEL_PATH"], "model_index.json").exists():
        subprocess.run([sys.executable, "-m", "generation.engine.demo_model", "build", os.environ["STUDIO_MODEL_PATH"]],
                       check=True, cwd=BASE_DIR)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], check=True, cwd=BASE_DIR)
    import django

    django.setup()
    return redis


def signed_up_user(password: str = "Bench-Studio-123"):
    """A user with a verified address and plenty of credits, and their password."""
    from allauth.account.models import EmailAddress

    from tests.factories import make_user

    user = make_user(credits=100000, password=password)
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    return user, password


def new_stack(var_dir: Path):
    """daphne and a Celery worker on the prepared database (not started yet)."""
    from django.conf import settings

    from tests.live_stack import LiveStack, stack_environment

    return LiveStack(env=stack_environment(database_url=f"sqlite:///{settings.DATABASES['default']['NAME']}"),
                     log_dir=var_dir / "logs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fixed-cost", action="store_true", help="the per-job cost outside the engine")
    args = parser.parse_args()

    var_dir = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    redis = prepare(var_dir)
    user, password = signed_up_user()
    stack = new_stack(var_dir)
    from tests.e2e.conftest import WebUser

    rows = []
    try:
        stack.start_web()
        stack.start_worker()
        web_user = WebUser(stack, user.email, password)
        from generation.engine import Engine
        from generation.engine.contracts import GenerationRequest

        if args.fixed_cost:
            rows = [measure_fixed_cost(size, args.steps, args.runs, web_user, stack) for size in args.sizes]
        else:
            engine = Engine(os.environ["STUDIO_MODEL_PATH"])
            for size in args.sizes:
                rows.append(measure(size, args.steps, args.runs, web_user, stack, engine, GenerationRequest))
    finally:
        stack.stop()
        if redis:
            redis.stop()
    (print_fixed_cost_table if args.fixed_cost else print_table)(rows, args.steps)


def create_form(size: int, steps: int) -> dict:
    return {"prompt": "a small red star in the top left on a blue background", "negative_prompt": "",
            "aspect": "1:1", "width": str(size), "height": str(size), "steps": str(steps),
            "guidance_scale": "7", "sampler": "euler_a", "seed": "42", "num_images": "1"}


def submit_and_follow(web_user, stack, form: dict) -> dict:
    """POST the Create form, follow the job's websocket to SUCCEEDED: wall-clock times (time.time(),
    to compare with the job's own timestamps) of the submit, its response, the first preview and
    the final event, and the job's id."""
    from websockets.sync.client import connect

    from generation.models import Job

    submitted = time.time()
    response = web_user.post_form("/create/", form, allow_redirects=False)
    answered = time.time()
    assert response.status_code == 302, response.text[:500]
    job_id = response.headers["Location"].rstrip("/").split("/")[-1]
    first_preview = None
    with connect(f"{stack.ws_url}/ws/jobs/{job_id}/",
                 additional_headers={"Cookie": web_user.cookie_header, "Origin": stack.base_url}) as socket:
        while True:
            message = socket.recv(timeout=120)
            if first_preview is None and 'src="data:image/' in message:
                first_preview = time.time()
            states = re.findall(r'data-state="(\w+)"', message)
            if states and states[-1] in ("succeeded", "failed", "cancelled"):
                assert states[-1] == "succeeded", Job.objects.get(pk=job_id).error
                return {"job_id": job_id, "submitted": submitted, "answered": answered,
                        "first_preview": first_preview, "done": time.time()}


def measure(size, steps, runs, web_user, stack, engine, GenerationRequest) -> dict:
    form = create_form(size, steps)

    def one_job() -> tuple[float, float]:
        times = submit_and_follow(web_user, stack, form)
        return times["done"] - times["submitted"], times["first_preview"] - times["submitted"]

    def engine_time(previews: bool) -> float:
        request = GenerationRequest(prompt=form["prompt"], width=size, height=size, steps=steps,
                                    guidance_scale=7.0, sampler="euler_a", seed=42)
        started = time.perf_counter()
        engine.generate(request, on_step=lambda update: None, previews=previews)
        return time.perf_counter() - started

    one_job(), engine_time(True), engine_time(False)  # warm-ups
    end_to_end, first_frames, with_previews, without_previews = [], [], [], []
    for _ in range(runs):
        total, first = one_job()
        end_to_end.append(total)
        first_frames.append(first)
        with_previews.append(engine_time(True))
        without_previews.append(engine_time(False))
    median = statistics.median
    return {
        "size": f"{size}x{size}", "e2e": median(end_to_end), "engine": median(with_previews),
        "engine_off": median(without_previews), "first": median(first_frames),
    }


def measure_fixed_cost(size, steps, runs, web_user, stack) -> dict:
    """Medians over `runs` jobs (after 2 warm-ups) of the per-job cost outside the engine, and its parts."""
    from generation.models import Job

    form = create_form(size, steps)
    for _ in range(2):
        submit_and_follow(web_user, stack, form)
    parts = {name: [] for name in ("total", "engine", "fixed", "http", "waiting", "worker", "event")}
    for _ in range(runs):
        times = submit_and_follow(web_user, stack, form)
        job = Job.objects.get(pk=times["job_id"])
        created, started, finished = (job.created_at.timestamp(), job.started_at.timestamp(),
                                      job.finished_at.timestamp())
        total = times["done"] - times["submitted"]
        parts["total"].append(total)
        parts["engine"].append(job.engine_seconds)
        parts["fixed"].append(total - job.engine_seconds)
        parts["http"].append(times["answered"] - times["submitted"])
        parts["waiting"].append(started - created)
        parts["worker"].append(finished - started - job.engine_seconds)
        parts["event"].append(times["done"] - finished)
        time.sleep(0.2)  # the worker is idle again, as for a user's next job
    return {"size": f"{size}x{size}", **{name: statistics.median(values) for name, values in parts.items()}}


def print_fixed_cost_table(rows: list[dict], steps: int) -> None:
    print(f"\nPer-job cost outside the engine, demo model, {steps} steps, medians in ms (this machine)")
    header = ("size", "submit->SUCCEEDED", "engine (worker)", "fixed = total - engine", "HTTP submit",
              "commit->claimed", "worker around the engine", "finished->client")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for row in rows:
        print(" | ".join([row["size"], *(f"{row[name] * 1000:.1f}" for name in (
            "total", "engine", "fixed", "http", "waiting", "worker", "event"))]))


def print_table(rows: list[dict], steps: int) -> None:
    print(f"\nEnd-to-end latency, demo model, {steps} steps, medians (this machine)")
    header = ("size", "submit->SUCCEEDED", "engine (previews on)", "(a) e2e/engine", "engine previews off",
              "(b) on/off", "(c) submit->1st preview")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for row in rows:
        print(" | ".join([
            row["size"], f"{row['e2e']:.3f}s", f"{row['engine']:.3f}s", f"{row['e2e'] / row['engine']:.3f}",
            f"{row['engine_off']:.3f}s", f"{row['engine'] / row['engine_off']:.3f}", f"{row['first']:.3f}s",
        ]))


if __name__ == "__main__":
    main()
