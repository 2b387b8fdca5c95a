"""Test set-up shared by every suite. The environment itself is prepared in tests/settings.py."""

from __future__ import annotations

import os

import pytest


def pytest_unconfigure(config):
    from django.conf import settings

    if getattr(settings, "PRIVATE_REDIS", None) is not None:
        settings.PRIVATE_REDIS.stop()


@pytest.fixture(autouse=True)
def _fresh_redis_state():
    """Each test starts with an empty broker and channel layer (the server is shared)."""
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    yield


@pytest.fixture
def client_with_credits(client):
    """A signed-in test client whose user (`client.user`) has 100 credits."""
    from tests.factories import make_user

    user = make_user(credits=100)
    client.force_login(user)
    client.user = user
    return client
