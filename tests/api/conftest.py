"""Users for the API tests without a password: hashing one (PBKDF2) costs about a second on a busy
CI machine, and an API key needs none."""

from __future__ import annotations

import itertools

from django.contrib.auth import get_user_model

_numbers = itertools.count()


def fast_user(*, email: str | None = None):
    email = email or f"api-user{next(_numbers)}@example.com"
    return get_user_model().objects.create_user(username=email, email=email)  # no password: unusable, no hashing
