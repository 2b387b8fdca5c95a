"""Fixtures for the billing tests.

On SQLite the test database is a file in this run's own var dir (not Django's shared-cache
in-memory database, and not a file shared with other test runs on the same checkout), so the
threaded tests exercise real WAL + IMMEDIATE locking, as in production. This applies when the
billing tests set up the test database (e.g. `pytest tests/billing`).
"""

from __future__ import annotations

import itertools
import os
import tempfile

import pytest
from django.contrib.auth import get_user_model

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        var_dir = os.environ.get("STUDIO_VAR_DIR") or tempfile.mkdtemp()
        db.setdefault("TEST", {})["NAME"] = os.path.join(var_dir, "test-billing.sqlite3")


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
