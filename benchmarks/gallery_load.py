"""The gallery under load: 10,000 images on PostgreSQL, 16 concurrent clients on loopback.

    .venv/bin/python benchmarks/gallery_load.py [--clients 1 16] [--think 0 1] [--seconds 30] [--explain]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) and locust in the venv
(`.venv/bin/pip install locust`: a benchmark tool, not a requirement of the app).

1. Creates the database `studio_bench` if missing (--database to change) and migrates it.
2. Seeds it once (kept for the next run; --reseed starts again): one user with 10,000 images
   (one job each, varied prompts, spread over a year) and 10 other users with 3,000 each, so the
   owner's index has to pick 10,000 rows out of 40,000.
3. Counts the queries of each request in this process (Django's test client on the same
   database, CaptureQueriesContext) and times the gallery query itself (EXPLAIN ANALYZE).
4. Starts a real daphne (and a private Redis unless REDIS_URL is set) on loopback, signs each
   client in over HTTP, and runs locust in library mode: every client loops over the first
   gallery page (full page), the next page (the htmx request its scroll sentinel makes, from the
   first page's keyset cursor) and a prompt search (full page); --think 0 is a closed loop (each
   client asks again as soon as it is answered: 16 requests always in flight), --think 1 a person
   who looks at each page for a second.
Prints median and p95 latency per request kind and client count; with --explain (or when a p95
is over the 50 ms target) also the plans of the three gallery queries.
"""

from __future__ import annotations

import argparse
import html
import itertools
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

# locust patches the standard library with gevent on import: before anything opens a socket or
# starts a thread (nothing above does).
import gevent
import locust
from locust import FastHttpUser, constant, events, task
from locust.env import Environment

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

DEFAULT_DATABASE = "studio_bench"
PASSWORD = "Bench-Gallery-123"
OWNER_EMAIL = "gallery-owner@bench.example.com"
OWNER_IMAGES = 10_000
OTHER_USERS, OTHER_IMAGES = 10, 3_000
SEARCH = "lighthouse"  # in about one prompt in 25 (SUBJECTS below)
TARGET_P95_MS = 50

SUBJECTS = [
    "lighthouse", "fox", "castle", "robot", "waterfall", "owl", "city street", "mountain lake", "dragon",
    "sailing ship", "forest path", "teapot", "astronaut", "cat", "desert dunes", "cathedral", "koi pond",
    "train station", "hummingbird", "volcano", "library", "jellyfish", "windmill", "samurai", "greenhouse",
]
STYLES = ["oil painting", "watercolor", "photograph", "pixel art", "ink sketch", "3d render", "woodcut",
          "pastel drawing", "cinematic still", "isometric illustration"]
MOODS = ["at dusk", "in fog", "at night", "in spring", "under snow", "at golden hour", "in the rain",
         "on a sunny morning", "by candlelight", "in a storm"]
DETAILS = ["highly detailed", "soft light", "wide angle", "muted colors", "vivid colors", "dramatic shadows",
           "bokeh", "symmetrical", "minimalist", "intricate patterns"]


# --- Set-up -------------------------------------------------------------------------------------

def setup_environment(var_dir: Path, database: str) -> str:
    database_url = f"postgres://postgres@127.0.0.1:5432/{database}"
    os.environ["STUDIO_VAR_DIR"] = str(var_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "studio.settings"
    os.environ["STUDIO_STATIC_FROM_FINDERS"] = "1"
    os.environ["DATABASE_URL"] = database_url
    return database_url


def ensure_database(name: str) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def prompt_for(number: int) -> str:
    """A varied prompt: the four lists have coprime-ish lengths, so combinations rarely repeat."""
    subject = SUBJECTS[number % len(SUBJECTS)]
    style = STYLES[(number // 3) % len(STYLES)]
    mood = MOODS[(number // 7) % len(MOODS)]
    detail = DETAILS[(number // 11) % len(DETAILS)]
    return f"a {subject} {mood}, {style}, {detail}, variation {number}"


def make_bench_user(email: str):
    from allauth.account.models import EmailAddress
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username=email, email=email, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return user


def seed_images(user, count: int, start: int) -> None:
    """`count` succeeded one-image jobs for `user`, bulk-inserted. No files: the gallery page only
    links to the thumbnails, which the benchmark does not fetch."""
    from generation.models import Image, Job, JobState

    batch = 2_000
    for offset in range(0, count, batch):
        numbers = range(start + offset, start + min(offset + batch, count))
        jobs = Job.objects.bulk_create([
            Job(user=user, state=JobState.SUCCEEDED, prompt=prompt_for(n), width=[512, 768][n % 2], height=512,
                steps=20, guidance_scale=7.0, sampler=["euler", "euler_a", "dpmpp_2m"][n % 3], seed=n,
                num_images=1, model_name="studio-tiny", cost=1)
            for n in numbers
        ])
        Image.objects.bulk_create([
            Image(job=job, owner=user, index=0, seed=job.seed, width=job.width, height=job.height,
                  file=f"bench/{job.pk}.png", thumbnail=f"bench/{job.pk}.webp", infotext=job.prompt)
            for job in jobs
        ])


def spread_over_a_year() -> None:
    """bulk_create stamps every row with the same now(): give each job its own time (random order,
    one every ~50 minutes back), and its image the same."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE generation_job AS j SET created_at = now() - s.n * interval '53 minutes' "
            "FROM (SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY id) AS n FROM generation_job) AS s "
            "WHERE j.id = s.id"
        )
        cursor.execute(
            "UPDATE generation_image AS i SET created_at = j.created_at FROM generation_job AS j WHERE i.job_id = j.id"
        )
        cursor.execute("VACUUM ANALYZE")  # the updates left a dead version of every row


def seeded_owner(reseed: bool):
    from django.contrib.auth import get_user_model
    from django.db import connection

    from generation.models import Image

    User = get_user_model()
    owner = User.objects.filter(email=OWNER_EMAIL).first()
    if owner and not reseed and Image.objects.filter(owner=owner).count() == OWNER_IMAGES:
        print(f"Reusing the seeded database ({Image.objects.count()} images).")
        return owner
    print("Seeding ...", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE generation_image, generation_job CASCADE")
    User.objects.filter(email__endswith="@bench.example.com").delete()
    owner = make_bench_user(OWNER_EMAIL)
    seed_images(owner, OWNER_IMAGES, start=0)
    for number in range(OTHER_USERS):
        other = make_bench_user(f"other{number}@bench.example.com")
        seed_images(other, OTHER_IMAGES, start=OWNER_IMAGES + number * OTHER_IMAGES)
    spread_over_a_year()
    print(f"Seeded {Image.objects.count()} images.", flush=True)
    return owner


# --- Queries per page, measured in this process --------------------------------------------------

NEXT_URL = re.compile(r'hx-get="([^"]*after=[^"]*)"')


def next_page_url(page_html: str) -> str:
    match = NEXT_URL.search(page_html)
    assert match, "the first gallery page has no next-page link"
    return html.unescape(match.group(1))


def count_queries(owner, repeats: int = 10) -> dict[str, dict]:
    """Each request in this process, before the load: its query count, the gallery query's SQL,
    and (medians of `repeats`) the Python CPU time it costs the web process and the time of its
    SQL. CPU time hardly depends on how busy the machine is: it says what one request costs."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(owner)
    first = client.get("/gallery/")
    requests_ = {"first page": ("/gallery/", {}), "next page": (next_page_url(first.content.decode()),
                                                                {"HTTP_HX_REQUEST": "true"}),
                 "search": (f"/gallery/?q={SEARCH}", {})}
    found = {}
    for name, (url, headers) in requests_.items():
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url, **headers)
        assert response.status_code == 200, (name, response.status_code)
        tiles = response.content.decode().count("data-gallery-tile")
        gallery_sql = [q["sql"] for q in captured.captured_queries
                       if "generation_image" in q["sql"] and "LIMIT 25" in q["sql"]]
        cpu, sql = [], []
        for _ in range(repeats):
            with CaptureQueriesContext(connection) as timed:
                started = time.process_time()
                client.get(url, **headers)
                cpu.append((time.process_time() - started) * 1000)
            sql.append(sum(float(query["time"]) for query in timed.captured_queries) * 1000)
        found[name] = {"url": url, "headers": headers, "queries": len(captured.captured_queries),
                       "tiles": tiles, "sql": gallery_sql[0] if gallery_sql else None,
                       "all": [q["sql"] for q in captured.captured_queries],
                       "cpu_ms": statistics.median(cpu), "sql_ms": statistics.median(sql)}
    return found


def explain(sql: str) -> tuple[float, str]:
    """EXPLAIN ANALYZE of one query: its execution time in ms and the plan."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    executed = float(re.search(r"Execution Time: ([\d.]+) ms", plan).group(1))
    planned = float(re.search(r"Planning Time: ([\d.]+) ms", plan).group(1))
    return executed + planned, plan


# --- The load --------------------------------------------------------------------------------------

class GalleryVisitor(FastHttpUser):
    """One signed-in browser: opens the gallery, scrolls one page, searches; again and again."""

    wait_time = constant(0)
    think = 0.0  # seconds between two requests of one client (0: closed loop, as fast as answered)
    sessions: ClassVar[list] = []  # cookie jars of signed-in clients
    turn: ClassVar = itertools.count()

    def on_start(self) -> None:
        """Take one of the sessions signed in before the run (allauth limits logins per address)."""
        for cookie in self.sessions[next(self.turn) % len(self.sessions)]:
            self.client.cookiejar.set_cookie(cookie)

    @task
    def browse(self) -> None:
        with self.client.get("/gallery/", name="first page", catch_response=True) as first:
            if first.status_code != 200 or "data-gallery-tile" not in first.text:
                first.failure(f"first page: {first.status_code}")
                return
        gevent.sleep(self.think)
        self.client.get(next_page_url(first.text), name="next page", headers={"HX-Request": "true"})
        gevent.sleep(self.think)
        self.client.get(f"/gallery/?q={SEARCH}", name="search")
        gevent.sleep(self.think)


def sign_in(base_url: str):
    """A real login over HTTP (the allauth form, CSRF and all): the client's cookie jar."""
    import requests

    http = requests.Session()
    page = http.get(f"{base_url}/accounts/login/")
    response = http.post(f"{base_url}/accounts/login/", allow_redirects=False,
                         data={"login": OWNER_EMAIL, "password": PASSWORD,
                               "csrfmiddlewaretoken": http.cookies["csrftoken"]},
                         headers={"Referer": f"{base_url}/accounts/login/"})
    assert page.status_code == 200 and response.status_code == 302, f"login failed: {response.status_code}"
    return http.cookies


def run_load(base_url: str, clients: int, seconds: float, warmup: float, think: float) -> dict[str, list[float]]:
    """Latencies (ms) per request name, recorded after every client signed in and a warm-up."""
    GalleryVisitor.host, GalleryVisitor.think = base_url, think
    times: dict[str, list[float]] = {}
    errors: list[str] = []
    recording = {"on": False}

    def on_request(request_type, name, response_time, response_length, exception=None, **kwargs):
        if exception:
            errors.append(f"{name}: {exception}")
        elif recording["on"] and name in ("first page", "next page", "search"):
            times.setdefault(name, []).append(response_time)

    environment = Environment(user_classes=[GalleryVisitor], events=events)
    environment.events.request.add_listener(on_request)
    runner = environment.create_local_runner()
    runner.start(clients, spawn_rate=clients)
    deadline = time.monotonic() + 60
    while runner.user_count < clients and time.monotonic() < deadline:
        gevent.sleep(0.1)
    gevent.sleep(warmup)
    recording["on"] = True
    started = time.monotonic()
    gevent.sleep(seconds)
    recording["on"] = False
    elapsed = time.monotonic() - started
    runner.quit()
    environment.events.request.remove_listener(on_request)
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[:3]}")
    return {name: values for name, values in times.items()} | {"_elapsed": [elapsed],
                                                                  "_load": [os.getloadavg()[0]]}


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


# --- Main ----------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--think", type=float, nargs="+", default=[0.0, 1.0],
                        help="seconds each client waits between its requests: 0 is a closed loop")
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--explain", action="store_true", help="print the query plans whatever the p95")
    args = parser.parse_args()

    var_dir = Path(tempfile.mkdtemp(prefix="studio-bench-gallery-"))
    database_url = setup_environment(var_dir, args.database)
    ensure_database(args.database)
    import subprocess

    from studio.private_redis import ensure_redis_url

    redis = ensure_redis_url(var_dir / "redis")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], check=True, cwd=BASE_DIR)

    import django

    django.setup()
    from tests.live_stack import LiveStack, stack_environment

    owner = seeded_owner(args.reseed)
    measured = count_queries(owner)
    for name, found in measured.items():
        found["db_ms"], found["plan"] = explain(found["sql"])

    stack = LiveStack(env=stack_environment(database_url=database_url), log_dir=var_dir / "logs")
    results = {}
    try:
        stack.start_web()
        GalleryVisitor.sessions = [sign_in(stack.base_url) for _ in range(max(args.clients))]
        for think in args.think:
            for clients in args.clients:
                results[clients, think] = run_load(stack.base_url, clients, args.seconds, args.warmup, think)
    except Exception:
        print(stack.logs())
        raise
    finally:
        stack.stop()
        if redis:
            redis.stop()
    missed = print_table(results, measured)
    if args.explain or missed:
        for name, found in measured.items():
            print(f"\n--- {name}: {found['url']}\n{found['sql']}\n\n{found['plan']}")


def print_table(results: dict[tuple[int, float], dict], measured: dict[str, dict]) -> bool:
    names = ("first page", "next page", "search")
    print(f"\nGallery under load: {OWNER_IMAGES:,} images of one user among "
          f"{OWNER_IMAGES + OTHER_USERS * OTHER_IMAGES:,}, PostgreSQL, one daphne, locust {locust.__version__}")
    header = ("clients", "think time", "request", "median", "p95", "requests/s", "queries per request",
              "tiles", "Python CPU per request", "its SQL", "gallery query (EXPLAIN ANALYZE)",
              "load average")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    missed = False
    for (clients, think), times in results.items():
        elapsed = times["_elapsed"][0]
        for name in names:
            values = times[name]
            median, high = statistics.median(values), p95(values)
            missed |= clients >= 16 and high > TARGET_P95_MS
            found = measured[name]
            print(" | ".join([
                str(clients), f"{think:g} s", name, f"{median:.1f} ms", f"{high:.1f} ms", f"{len(values) / elapsed:.1f}",
                str(found["queries"]), str(found["tiles"]), f"{found['cpu_ms']:.1f} ms", f"{found['sql_ms']:.0f} ms",
                f"{found['db_ms']:.2f} ms", f"{times['_load'][0]:.1f}",
            ]))
    return missed


if __name__ == "__main__":
    main()
