"""The same job through the API and through the web, submit to done, side by side on one stack.

    .venv/bin/python benchmarks/api_submit_to_done.py [--runs 5] [--size 128] [--steps 12]

Starts a private Redis, a fresh SQLite database, daphne and one Celery worker (solo pool, the demo
model), as benchmarks/e2e_latency.py does. Then, alternating so both see the same machine:
  web: POST the Create form (a signed-in session) -> SUCCEEDED on the job's websocket;
  api: POST /api/v1/generations (a key) -> the final `state` on its event stream (SSE);
  a1111: POST /sdapi/v1/txt2img, which answers with the images once the job is done.
Prints medians and the ratios to the web (issue 12's target: api/web <= 1.05). One warm-up each.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
sys.path.insert(0, str(BASE_DIR / "benchmarks"))

from e2e_latency import new_stack, prepare, signed_up_user


def web_job(stack, web_user, form: dict) -> float:
    from websockets.sync.client import connect

    started = time.perf_counter()
    response = web_user.post_form("/create/", form, allow_redirects=False)
    assert response.status_code == 302, response.text[:500]
    job_id = response.headers["Location"].rstrip("/").split("/")[-1]
    with connect(f"{stack.ws_url}/ws/jobs/{job_id}/",
                 additional_headers={"Cookie": web_user.cookie_header, "Origin": stack.base_url}) as socket:
        while True:
            states = re.findall(r'data-state="(\w+)"', socket.recv(timeout=120))
            if states and states[-1] in ("succeeded", "failed", "cancelled"):
                assert states[-1] == "succeeded"
                return time.perf_counter() - started


def api_job(stack, session, body: dict) -> float:
    started = time.perf_counter()
    created = session.post(f"{stack.base_url}/api/v1/generations", json=body, timeout=30)
    assert created.status_code == 202, created.text[:500]
    with session.get(f"{stack.base_url}/api/v1/generations/{created.json()['id']}/events", stream=True,
                     timeout=120) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("data: ") and any(f'"state":"{s}"' in line for s in ("succeeded", "failed", "cancelled")):
                assert '"state":"succeeded"' in line
                return time.perf_counter() - started
    raise RuntimeError("the stream ended without a final state")


def a1111_job(stack, session, body: dict) -> float:
    started = time.perf_counter()
    response = session.post(f"{stack.base_url}/sdapi/v1/txt2img", json=body, timeout=120)
    assert response.status_code == 200 and response.json()["images"], response.text[:500]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()

    var_dir = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    redis = prepare(var_dir)
    import requests

    from accounts import services as accounts
    from tests.e2e.conftest import WebUser

    user, password = signed_up_user()
    _, token = accounts.api_key_create(actor=user, name="bench", scopes=["generate", "read_images"])
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"

    size, steps = str(args.size), str(args.steps)
    prompt = "a small red star in the top left on a blue background"
    form = {"prompt": prompt, "negative_prompt": "", "aspect": "1:1", "width": size, "height": size, "steps": steps,
            "guidance_scale": "7", "sampler": "euler_a", "seed": "42", "num_images": "1"}
    body = {"prompt": prompt, "width": args.size, "height": args.size, "steps": args.steps, "guidance_scale": 7,
            "sampler": "euler_a", "seed": 42}
    a1111 = {"prompt": prompt, "width": args.size, "height": args.size, "steps": args.steps, "cfg_scale": 7,
             "sampler_name": "Euler a", "seed": 42}

    stack = new_stack(var_dir)
    times: dict[str, list[float]] = {"web": [], "api": [], "a1111": []}
    try:
        stack.start_web()
        stack.start_worker()
        web_user = WebUser(stack, user.email, password)
        runs = {"web": lambda: web_job(stack, web_user, form), "api": lambda: api_job(stack, session, body),
                "a1111": lambda: a1111_job(stack, session, a1111)}
        for run in runs.values():
            run()  # warm-up
        for _ in range(args.runs):
            for name, run in runs.items():
                times[name].append(run())
    finally:
        stack.stop()
        if redis:
            redis.stop()
    web = statistics.median(times["web"])
    print(f"\nSubmit to done, the same job ({args.size}x{args.size}, {args.steps} steps, demo model), medians of "
          f"{args.runs}, alternating, one stack (this machine)")
    print("| path | median s | min s | max s | / web |")
    print("|---|---|---|---|---|")
    for name, label in (("web", "web: Create form + websocket"), ("api", "API: POST /generations + SSE"),
                        ("a1111", "A1111: POST /sdapi/v1/txt2img")):
        values = times[name]
        print(f"| {label} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} | "
              f"{statistics.median(values) / web:.3f} |")


if __name__ == "__main__":
    main()
