"""Free credits on email verification, staff adjustments and refunds."""

from __future__ import annotations


import pytest
from allauth.account.models import EmailAddress, EmailConfirmationHMAC
from django.urls import reverse

from billing.models import EntryKind, LedgerEntry, PriceSettings
from billing.selectors import wallet_balance
from billing.services import (
    AlreadyRecorded,
    InsufficientCredits,
    credits_adjust,
    credits_capture,
    credits_grant_signup,
    credits_refund,
    credits_reserve,
)
from tests.billing.support import give, make_job

pytestmark = pytest.mark.django_db


def unverified(user, email=None) -> EmailAddress:
    return EmailAddress.objects.create(user=user, email=email or user.email, verified=False, primary=True)


def confirm_by_link(client, address: EmailAddress):
    key = EmailConfirmationHMAC(address).key
    return client.get(reverse("account_confirm_email", args=[key]))


def test_clicking_the_link_grants_once(client, user):
    address = unverified(user)
    for _ in range(3):
        response = confirm_by_link(client, address)
        assert response.status_code in (200, 302)
        address.refresh_from_db()
    assert address.verified
    assert wallet_balance(user=user) == (100, 0)
    grant = LedgerEntry.objects.get(kind=EntryKind.GRANT)
    assert grant.idempotency_key == f"signup:{user.email.lower()}"


def test_no_grant_for_an_unverified_address(user):
    assert credits_grant_signup(email_address=unverified(user)) is None
    assert wallet_balance(user=user) == (0, 0)


def test_amount_is_editable(user):
    prices = PriceSettings.load()
    prices.signup_credits = 40
    prices.save()
    address = unverified(user)
    address.verified = True
    address.save()
    credits_grant_signup(email_address=address)
    assert wallet_balance(user=user) == (40, 0)


def test_zero_signup_credits_grants_nothing(user):
    prices = PriceSettings.load()
    prices.signup_credits = 0
    prices.save()
    address = EmailAddress.objects.create(user=user, email=user.email, verified=True)
    assert credits_grant_signup(email_address=address) is None
    assert not LedgerEntry.objects.exists()


def test_same_address_never_granted_twice_even_across_accounts(make_user):
    first = make_user(email="Reuse@Example.com")
    address = EmailAddress.objects.create(user=first, email="Reuse@Example.com", verified=True)
    credits_grant_signup(email_address=address)
    address.delete()
    second = make_user(email="reuse@example.COM")
    again = EmailAddress.objects.create(user=second, email="reuse@example.COM", verified=True)
    assert credits_grant_signup(email_address=again) is None
    assert wallet_balance(user=first) == (100, 0)
    assert wallet_balance(user=second) == (0, 0)


def test_a_second_address_of_the_same_user_gets_nothing(user):
    one = EmailAddress.objects.create(user=user, email="one@example.com", verified=True)
    two = EmailAddress.objects.create(user=user, email="two@example.com", verified=True)
    credits_grant_signup(email_address=one)
    assert credits_grant_signup(email_address=two) is None
    assert wallet_balance(user=user) == (100, 0)


# --- staff adjustments ----------------------------------------------------------------------------


def test_adjust_grant_and_revoke_record_actor_and_reason(user, staff):
    credits_adjust(user=user, amount=50, actor=staff, reason="Apology for downtime", idempotency_key="k1")
    credits_adjust(user=user, amount=-20, actor=staff, reason="Abuse", idempotency_key="k2")
    assert wallet_balance(user=user) == (30, 0)
    revoke = LedgerEntry.objects.get(idempotency_key="adjust:k2")
    assert (revoke.amount, revoke.available_delta, revoke.actor, revoke.reason) == (20, -20, staff, "Abuse")


def test_adjust_needs_reason_staff_and_nonzero(user, staff):
    with pytest.raises(ValueError):
        credits_adjust(user=user, amount=5, actor=staff, reason="  ", idempotency_key="a")
    with pytest.raises(ValueError):
        credits_adjust(user=user, amount=0, actor=staff, reason="x", idempotency_key="b")
    with pytest.raises(PermissionError):
        credits_adjust(user=user, amount=5, actor=user, reason="x", idempotency_key="c")
    assert not LedgerEntry.objects.exists()


def test_revoke_cannot_go_negative(user, staff):
    give(user, 10)
    with pytest.raises(InsufficientCredits):
        credits_adjust(user=user, amount=-11, actor=staff, reason="too much", idempotency_key="x")
    assert wallet_balance(user=user) == (10, 0)


def test_adjust_is_idempotent_by_key(user, staff):
    credits_adjust(user=user, amount=5, actor=staff, reason="x", idempotency_key="same")
    with pytest.raises(AlreadyRecorded):
        credits_adjust(user=user, amount=5, actor=staff, reason="x", idempotency_key="same")
    assert wallet_balance(user=user) == (5, 0)


# --- refunds ---------------------------------------------------------------------------------------


def test_refund_gives_back_what_was_captured_once(user, staff):
    give(user, 20)
    job = make_job(user, num_images=4)
    credits_reserve(user=job.user, subject=job.subject, amount=16)
    credits_capture(subject=job.subject, amount=12)
    assert wallet_balance(user=user) == (8, 0)
    entry = credits_refund(subject=job.subject, actor=staff, reason="Blank images")
    assert entry.amount == 12 and entry.actor == staff
    assert wallet_balance(user=user) == (20, 0)
    with pytest.raises(AlreadyRecorded):
        credits_refund(subject=job.subject, actor=staff, reason="again")
    assert wallet_balance(user=user) == (20, 0)


def test_refund_of_an_uncharged_job_is_refused(user, staff):
    give(user, 20)
    job = make_job(user)
    credits_reserve(user=job.user, subject=job.subject, amount=4)
    credits_capture(subject=job.subject, amount=0)
    with pytest.raises(ValueError):
        credits_refund(subject=job.subject, actor=staff, reason="x")
    with pytest.raises(ValueError):
        credits_refund(subject=make_job(user).subject, actor=staff, reason="x")
    with pytest.raises(ValueError):
        credits_refund(subject=job.subject, actor=staff, reason="")


def test_no_grant_for_a_sign_up_that_accounts_marked_as_not_due(make_user):
    from accounts.services import signup_record

    first, farmed = make_user(), make_user()
    first.email, farmed.email = "artist@example.com", "artist+2@example.com"  # one mailbox, two accounts
    signup_record(user=first, address="203.0.113.9")
    signup_record(user=farmed, address="203.0.113.9")
    first_address = EmailAddress.objects.create(user=first, email=first.email, verified=True)
    farmed_address = EmailAddress.objects.create(user=farmed, email=farmed.email, verified=True)
    granted, refused = (credits_grant_signup(email_address=first_address),
                        credits_grant_signup(email_address=farmed_address))
    assert granted is not None and refused is None
    assert wallet_balance(user=farmed) == (0, 0)
