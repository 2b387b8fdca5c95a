"""Helpers shared by the billing tests (imported as tests.billing.support)."""

from __future__ import annotations

import uuid

from django.contrib.auth import get_user_model


def make_job(user, *, num_images: int = 1, width: int = 512, height: int = 512, steps: int = 30, **extra):
    from generation.models import Job

    fields = dict(
        user=user,
        prompt="a lighthouse",
        width=width,
        height=height,
        steps=steps,
        guidance_scale=7.0,
        sampler="euler",
        seed=1,
        num_images=num_images,
        model_name="demo",
    )
    fields.update(extra)
    return Job.objects.create(**fields)


def give(user, amount: int):
    """Put credits in a user's wallet through the services (a staff adjustment)."""
    from billing.services import credits_adjust

    return credits_adjust(
        user=user, amount=amount, actor=_system_staff(), reason="test funds", idempotency_key=str(uuid.uuid4())
    )


def _system_staff():
    User = get_user_model()
    staff, _ = User.objects.get_or_create(
        username="test-staff", defaults={"email": "test-staff@example.com", "is_staff": True}
    )
    return staff


def assert_wallet_consistent(wallet_id: int) -> None:
    from billing.models import Wallet
    from billing.selectors import wallet_totals_from_ledger

    wallet = Wallet.objects.get(pk=wallet_id)
    assert (wallet.available, wallet.held) == wallet_totals_from_ledger(wallet_id=wallet_id)
    assert wallet.available >= 0 and wallet.held >= 0
