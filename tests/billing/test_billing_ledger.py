"""The job lifecycle interface the generation app depends on: reserve -> capture | release."""

from __future__ import annotations

import pytest

from billing.models import EntryKind, LedgerEntry, Wallet
from billing.selectors import wallet_balance
from billing.services import (
    InsufficientCredits,
    credits_capture,
    credits_release,
    credits_reserve,
    job_price,
)
from tests.billing.support import assert_wallet_consistent, give, make_job

pytestmark = pytest.mark.django_db


def kinds(job):
    return sorted(LedgerEntry.objects.filter(subject=job.subject).values_list("kind", flat=True))


def test_reserve_moves_available_to_held(user):
    give(user, 10)
    job = make_job(user)
    credits_reserve(user=job.user, subject=job.subject, amount=4)
    assert wallet_balance(user=user) == (6, 4)
    entry = LedgerEntry.objects.get(idempotency_key=f"reserve:{job.subject}")
    assert (entry.kind, entry.amount, entry.available_delta, entry.held_delta) == ("reserve", 4, -4, 4)
    assert (entry.available_after, entry.held_after) == (6, 4)
    assert_wallet_consistent(entry.wallet_id)


def test_reserve_twice_for_one_job_reserves_once(user):
    give(user, 10)
    job = make_job(user)
    credits_reserve(user=job.user, subject=job.subject, amount=4)
    credits_reserve(user=job.user, subject=job.subject, amount=4)
    assert wallet_balance(user=user) == (6, 4)


def test_reserve_insufficient_raises_clean_error_and_writes_nothing(user):
    give(user, 3)
    job = make_job(user)
    with pytest.raises(InsufficientCredits) as info:
        credits_reserve(user=job.user, subject=job.subject, amount=8)
    assert (info.value.needed, info.value.available) == (8, 3)
    assert str(info.value) == "Not enough credits: this needs 8, you have 3."
    assert wallet_balance(user=user) == (3, 0)
    assert not LedgerEntry.objects.filter(kind=EntryKind.RESERVE).exists()


def test_reserve_without_wallet_is_insufficient(user):
    job = make_job(user)
    with pytest.raises(InsufficientCredits) as info:
        credits_reserve(user=job.user, subject=job.subject, amount=1)
    assert info.value.available == 0


def test_insufficient_rolls_back_the_callers_transaction(user):
    from django.db import transaction

    from billing.models import CreditPack

    give(user, 2)
    with pytest.raises(InsufficientCredits):
        with transaction.atomic():
            CreditPack.objects.create(name="written by the caller", credits=1, price_cents=100)  # e.g. the Job row
            job = make_job(user)
            credits_reserve(user=job.user, subject=job.subject, amount=4)
    assert not CreditPack.objects.filter(name="written by the caller").exists()
    assert wallet_balance(user=user) == (2, 0)


def test_zero_reserve_records_nothing_and_capture_zero_is_a_noop(user):
    job = make_job(user)
    credits_reserve(user=job.user, subject=job.subject, amount=0)
    credits_capture(subject=job.subject, amount=0)
    credits_release(subject=job.subject, reason="x")
    assert not LedgerEntry.objects.filter(subject=job.subject).exists()


def test_capture_all(user):
    give(user, 10)
    job = make_job(user)
    credits_reserve(user=job.user, subject=job.subject, amount=4)
    credits_capture(subject=job.subject, amount=4)
    assert wallet_balance(user=user) == (6, 0)
    assert kinds(job) == ["capture", "reserve"]


def test_capture_partial_releases_the_rest(user):
    give(user, 20)
    job = make_job(user, num_images=4)
    credits_reserve(user=job.user, subject=job.subject, amount=16)
    credits_capture(subject=job.subject, amount=8)
    assert wallet_balance(user=user) == (12, 0)
    assert kinds(job) == ["capture", "release", "reserve"]
    assert LedgerEntry.objects.get(idempotency_key=f"release:{job.subject}").amount == 8


def test_capture_zero_releases_everything(user):
    give(user, 10)
    job = make_job(user)
    credits_reserve(user=job.user, subject=job.subject, amount=4)
    credits_capture(subject=job.subject, amount=0)
    assert wallet_balance(user=user) == (10, 0)


def test_capture_is_idempotent_and_blocks_later_release(user):
    give(user, 10)
    job = make_job(user)
    credits_reserve(user=job.user, subject=job.subject, amount=4)
    credits_capture(subject=job.subject, amount=4)
    credits_capture(subject=job.subject, amount=4)
    credits_capture(subject=job.subject, amount=2)
    credits_release(subject=job.subject, reason="late failure")
    assert wallet_balance(user=user) == (6, 0)
    assert kinds(job) == ["capture", "reserve"]


def test_release_is_idempotent_and_blocks_later_capture(user):
    give(user, 10)
    job = make_job(user)
    credits_reserve(user=job.user, subject=job.subject, amount=4)
    credits_release(subject=job.subject, reason="failed")
    credits_release(subject=job.subject, reason="failed again")
    credits_capture(subject=job.subject, amount=4)
    assert wallet_balance(user=user) == (10, 0)
    entry = LedgerEntry.objects.get(idempotency_key=f"release:{job.subject}")
    assert entry.reason == "failed"
    assert kinds(job) == ["release", "reserve"]


def test_capture_more_than_hold_is_a_programming_error(user):
    give(user, 10)
    job = make_job(user)
    credits_reserve(user=job.user, subject=job.subject, amount=4)
    with pytest.raises(ValueError):
        credits_capture(subject=job.subject, amount=5)
    assert wallet_balance(user=user) == (6, 4)


def test_release_without_reservation_is_a_noop(user):
    credits_release(subject=make_job(user).subject, reason="never reserved")


def test_ledger_is_append_only(user):
    give(user, 5)
    entry = LedgerEntry.objects.get()
    with pytest.raises(TypeError):
        entry.save()
    with pytest.raises(TypeError):
        entry.delete()
    with pytest.raises(TypeError):
        LedgerEntry.objects.all().delete()
    with pytest.raises(TypeError):
        LedgerEntry.objects.update(amount=1)


@pytest.mark.parametrize("subject", ["", "job", "job:", ":x", "Job:1", "job:a b", "job:\x00", "job:" + "9" * 200, None, 5])
def test_subjects_must_be_kind_colon_id(user, subject):
    from billing.services import InvalidSubject

    give(user, 10)
    with pytest.raises(InvalidSubject):
        credits_reserve(user=user, subject=subject, amount=4)
    with pytest.raises(InvalidSubject):
        credits_release(subject=subject, reason="x")
    assert wallet_balance(user=user) == (10, 0)


def test_one_hold_entry_per_subject_and_kind_whatever_the_key(user):
    """The database, not only the idempotency key, keeps one reserve/capture/release/refund per subject."""
    from django.db import IntegrityError, transaction

    give(user, 10)
    job = make_job(user)
    credits_reserve(user=user, subject=job.subject, amount=4)
    entry = LedgerEntry.objects.get(subject=job.subject)
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(
            wallet_id=entry.wallet_id, kind="reserve", amount=0, available_delta=0, held_delta=0,
            available_after=6, held_after=4, subject=job.subject, idempotency_key="another key",
        )


@pytest.mark.parametrize(
    "width,height,steps,n,expected",
    [
        (512, 512, 30, 1, 4),
        (512, 512, 30, 4, 16),
        (512, 512, 15, 1, 2),
        (512, 512, 1, 1, 1),  # 4/30 rounds up
        (768, 512, 30, 1, 6),
        (1024, 1024, 30, 1, 16),
        (512, 512, 31, 1, 5),  # 4.133.. -> 5
        (640, 384, 25, 2, 7),  # 640*384*25*2*4 / (512*512*30) = 6.25 -> 7
    ],
)
def test_job_price_default(width, height, steps, n, expected):
    assert job_price(width=width, height=height, steps=steps, num_images=n) == expected


def test_job_price_model_multiplier_and_settings():
    from decimal import Decimal

    from billing.models import ModelPrice, PriceSettings

    ModelPrice.objects.create(model_name="sdxl", multiplier=Decimal("2.5"))
    assert job_price(width=512, height=512, steps=30, num_images=1, model_name="sdxl") == 10
    assert job_price(width=512, height=512, steps=30, num_images=1, model_name="other") == 4
    prices = PriceSettings.load()
    prices.reference_credits = 3
    prices.save()
    assert job_price(width=512, height=512, steps=30, num_images=1) == 3
    assert job_price(width=512, height=512, steps=30, num_images=1, model_name="sdxl") == 8  # 7.5 -> 8


def test_job_price_exact_not_float():
    from billing.models import PriceSettings

    prices = PriceSettings.load()
    prices.reference_credits = 3
    prices.reference_steps = 10
    prices.save()
    # 3 * 10/10 = 3 exactly; with floats 0.1*3*10 style errors could round up to 4.
    assert job_price(width=512, height=512, steps=10, num_images=1) == 3


@pytest.mark.parametrize("bad", [0, -1, "5", 1.5, True])
def test_job_price_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        job_price(width=bad, height=512, steps=30, num_images=1)


def test_billing_check_command(user, make_user, settings):
    from io import StringIO

    from django.core.management import CommandError, call_command

    settings.BILLING_SUBJECTS = {}  # no spender to ask: holds are not judged
    give(user, 10)
    job = make_job(user)
    credits_reserve(user=job.user, subject=job.subject, amount=4)
    give(make_user(), 3)
    out = StringIO()
    call_command("billing_check", stdout=out)
    assert "All wallets balance." in out.getvalue()
    Wallet.objects.filter(owner_user=user).update(available=7)  # simulate a bug behind the services' back
    with pytest.raises(CommandError, match="1 wallet"):
        call_command("billing_check", stdout=StringIO(), stderr=StringIO())


LIVE_IDS: set[str] = set()


def live_ids_for_test(ids: list[str]) -> set[str]:
    return {ident for ident in ids if ident in LIVE_IDS}


def test_billing_check_reports_holds_whose_spender_says_they_are_over(user, settings):
    """Billing asks the spender named in settings.BILLING_SUBJECTS which subjects are still live."""
    from io import StringIO

    from django.core.management import CommandError, call_command

    settings.BILLING_SUBJECTS = {"job": {"live_ids": f"{__name__}.live_ids_for_test"}}
    give(user, 20)
    running, finished, settled = make_job(user), make_job(user), make_job(user)
    for job in (running, finished, settled):
        credits_reserve(user=user, subject=job.subject, amount=4)
    credits_capture(subject=settled.subject, amount=4)
    credits_reserve(user=user, subject="other:1", amount=1)  # a kind nobody can judge: not reported
    LIVE_IDS.clear()
    LIVE_IDS.add(str(running.pk))
    err = StringIO()
    with pytest.raises(CommandError, match="1 stale hold"):
        call_command("billing_check", stdout=StringIO(), stderr=err)
    assert finished.subject in err.getvalue() and "4 credits held" in err.getvalue()
    assert running.subject not in err.getvalue() and settled.subject not in err.getvalue()
    credits_release(subject=finished.subject, reason="repaired")
    out = StringIO()
    call_command("billing_check", stdout=out)
    assert "No stale holds." in out.getvalue()
