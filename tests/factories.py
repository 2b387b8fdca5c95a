"""Small helpers to make users, wallets and jobs in tests (through the real services)."""

from __future__ import annotations

import itertools

from django.contrib.auth import get_user_model

from billing.services import credits_adjust
from generation import services

_counter = itertools.count()


def make_user(*, email: str | None = None, credits: int = 0, staff: bool = False, password: str = "pw-Studio-123"):
    number = next(_counter)
    email = email or f"user{number}@example.com"
    user = get_user_model().objects.create_user(username=email, email=email, password=password, is_staff=staff)
    if credits:
        give_credits(user, credits)
    return user


def give_credits(user, amount: int) -> None:
    admin = get_user_model().objects.filter(is_staff=True).first() or get_user_model().objects.create_user(
        username=f"admin{next(_counter)}", email=f"admin{next(_counter)}@example.com", is_staff=True
    )
    credits_adjust(user=user, amount=amount, actor=admin, reason="test credits", idempotency_key=f"test-{next(_counter)}")


def job_params(**overrides) -> dict:
    params = {
        "prompt": "a red circle", "negative_prompt": "", "width": 64, "height": 64, "steps": 4,
        "guidance_scale": 7.0, "sampler": "euler", "seed": 42, "num_images": 1,
    }
    params.update(overrides)
    return params


def submit_job(user, **overrides):
    return services.job_submit(user=user, **job_params(**overrides))
