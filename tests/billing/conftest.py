"""Fixtures for the billing tests.

On SQLite the test database is a file in this run's own var dir (tests/settings.py and
studio/settings.py), so the threaded tests exercise real WAL + IMMEDIATE locking, as in production.
"""

from __future__ import annotations

import itertools

import pytest
from django.contrib.auth import get_user_model

_counter = itertools.count(1)


@pytest.fixture
def make_user(db):
    def make(*, email: str | None = None, staff: bool = False, **extra):
        n = next(_counter)
        email = email or f"user{n}@example.com"
        User = get_user_model()
        return User.objects.create_user(
            username=f"user{n}-{email}"[:150], email=email, password="pw-" + email, is_staff=staff, **extra
        )

    return make


@pytest.fixture
def user(make_user):
    return make_user()


@pytest.fixture
def staff(make_user):
    return make_user(staff=True)
