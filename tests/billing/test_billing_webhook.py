"""The Stripe webhook: signature, staleness, idempotency by event id, concurrency, zero 500s."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import stripe
from django.db import connection
from django.test import Client
from django.urls import reverse

from billing.models import CreditPack, LedgerEntry, Payment, PaymentStatus, StripeEvent
from billing.selectors import wallet_balance
from billing.services import wallet_get_or_create_for_user

SECRET = "whsec_test_secret"


@pytest.fixture(autouse=True)
def stripe_settings(settings):
    settings.STRIPE_SECRET_KEY = "sk_test_dummy"
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS = 300


def make_payment(user, *, credits=1000, cents=1000, session="cs_test_1") -> Payment:
    pack = CreditPack.objects.create(name="Pack", credits=credits, price_cents=cents)
    return Payment.objects.create(
        user=user, wallet=wallet_get_or_create_for_user(user=user), pack=pack, pack_name=pack.name,
        credits=credits, amount_cents=cents, currency="usd", provider="stripe", stripe_checkout_session_id=session,
    )


def event_body(payment: Payment, *, event_id=None, type="checkout.session.completed", paid=True, amount=None,
               session=None) -> str:
    return json.dumps({
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": type,
        "livemode": False,
        "created": int(time.time()),
        "data": {"object": {
            "id": session or payment.stripe_checkout_session_id,
            "object": "checkout.session",
            "client_reference_id": str(payment.pk),
            "metadata": {"payment_id": str(payment.pk)},
            "payment_status": "paid" if paid else "unpaid",
            "amount_total": payment.amount_cents if amount is None else amount,
            "currency": "usd",
            "payment_intent": "pi_123",
        }},
    })


def sign(body: str, *, secret=SECRET, timestamp=None) -> str:
    return stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)


def post(client, body: str, signature: str | None):
    extra = {"HTTP_STRIPE_SIGNATURE": signature} if signature is not None else {}
    return client.post(reverse("billing:stripe_webhook"), data=body, content_type="application/json", **extra)


@pytest.mark.django_db
def test_valid_event_credits_once(client, user):
    payment = make_payment(user)
    body = event_body(payment)
    response = post(client, body, sign(body))
    assert response.status_code == 200, response.content
    assert wallet_balance(user=user) == (1000, 0)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PAID and payment.stripe_payment_intent_id == "pi_123"
    # Replays of the same event, however often: no more credits.
    for _ in range(3):
        assert post(client, body, sign(body)).status_code == 200
    assert wallet_balance(user=user) == (1000, 0)
    assert StripeEvent.objects.count() == 1


@pytest.mark.django_db
def test_a_second_event_for_the_same_session_does_not_credit_again(client, user):
    payment = make_payment(user)
    for type in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        body = event_body(payment, type=type)
        assert post(client, body, sign(body)).status_code == 200
    assert wallet_balance(user=user) == (1000, 0)
    assert LedgerEntry.objects.filter(kind="purchase").count() == 1


@pytest.mark.django_db
def test_unpaid_then_async_success(client, user):
    payment = make_payment(user)
    body = event_body(payment, paid=False)
    assert post(client, body, sign(body)).status_code == 200
    assert wallet_balance(user=user) == (0, 0)
    body = event_body(payment, type="checkout.session.async_payment_succeeded")
    assert post(client, body, sign(body)).status_code == 200
    assert wallet_balance(user=user) == (1000, 0)


@pytest.mark.django_db
def test_out_of_order_expired_after_paid_is_harmless(client, user):
    payment = make_payment(user)
    paid = event_body(payment)
    expired = event_body(payment, type="checkout.session.expired", paid=False)
    assert post(client, paid, sign(paid)).status_code == 200
    assert post(client, expired, sign(expired)).status_code == 200
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PAID
    assert wallet_balance(user=user) == (1000, 0)


@pytest.mark.django_db
def test_expired_then_paid_still_credits(client, user):
    payment = make_payment(user)
    expired = event_body(payment, type="checkout.session.expired", paid=False)
    paid = event_body(payment)
    assert post(client, expired, sign(expired)).status_code == 200
    assert post(client, paid, sign(paid)).status_code == 200
    assert wallet_balance(user=user) == (1000, 0)


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "stale", "future", "just_future", "missing",
                                  "garbage_header",
                                  "not_json", "not_utf8"])
def test_bad_requests_are_400_and_credit_nothing(client, user, case):
    payment = make_payment(user)
    body = event_body(payment)
    signature = sign(body)
    if case == "tampered":
        body = body.replace('"amount_total": 1000', '"amount_total": 1')
    elif case == "wrong_secret":
        signature = sign(body, secret="whsec_wrong")
    elif case == "stale":
        signature = sign(body, timestamp=int(time.time()) - 301)
    elif case == "future":  # a signature made for an hour from now: the tolerance holds both ways
        signature = sign(body, timestamp=int(time.time()) + 3600)
    elif case == "just_future":  # past the 300 s tolerance by a margin: a slow request must not bring it back inside
        signature = sign(body, timestamp=int(time.time()) + 310)
    elif case == "missing":
        signature = None
    elif case == "garbage_header":
        signature = "t=abc,v1=zzz"
    elif case == "not_json":
        body = "not json {"
        signature = sign(body)
    elif case == "not_utf8":
        response = client.post(reverse("billing:stripe_webhook"), data=b"\xff\xfe{}", content_type="application/json",
                               HTTP_STRIPE_SIGNATURE=signature)
        assert response.status_code == 400
        return
    response = post(client, body, signature)
    assert response.status_code == 400
    assert wallet_balance(user=user) == (0, 0)
    assert not StripeEvent.objects.exists()


@pytest.mark.django_db
def test_webhook_without_secret_configured_is_400(client, user, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    payment = make_payment(user)
    body = event_body(payment)
    assert post(client, body, sign(body)).status_code == 400
    assert wallet_balance(user=user) == (0, 0)


@pytest.mark.django_db
def test_webhook_get_is_405(client):
    assert client.get(reverse("billing:stripe_webhook")).status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize("tweak", ["amount", "session", "unknown_payment", "other_type", "bad_payment_id"])
def test_signed_but_inapplicable_events_are_recorded_and_ignored(client, user, tweak):
    payment = make_payment(user)
    if tweak == "amount":
        body = event_body(payment, amount=1)
    elif tweak == "session":
        body = event_body(payment, session="cs_other")
    elif tweak == "other_type":
        body = event_body(payment, type="customer.created")
    else:
        data = json.loads(event_body(payment))
        pid = str(uuid.uuid4()) if tweak == "unknown_payment" else "not-a-uuid"
        data["data"]["object"]["metadata"]["payment_id"] = pid
        data["data"]["object"]["client_reference_id"] = pid
        body = json.dumps(data)
    response = post(client, body, sign(body))
    assert response.status_code == 200
    assert response.content.decode().startswith("ignored")
    assert wallet_balance(user=user) == (0, 0)
    assert StripeEvent.objects.count() == 1


def _same_event_concurrently(user, copies: int):
    payment = make_payment(user)
    bodies = [event_body(payment, event_id="evt_same")] * copies + [event_body(payment, event_id="evt_other")]
    barrier = threading.Barrier(len(bodies))
    statuses, errors = [], []

    def deliver(body):
        try:
            client = Client()
            signature = sign(body)
            barrier.wait()
            statuses.append(post(client, body, signature).status_code)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert statuses == [200] * len(bodies)
    # Two distinct valid events for one payment: one purchase. One StripeEvent row per event id.
    assert wallet_balance(user=user) == (1000, 0)
    assert LedgerEntry.objects.filter(kind="purchase").count() == 1
    assert StripeEvent.objects.filter(event_id="evt_same").count() == 1
    assert StripeEvent.objects.count() == 2


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_same_event_three_times_at_once(user):
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip("needs a file or server database (threads); run `pytest tests/billing` or on PostgreSQL")
    _same_event_concurrently(user, copies=3)


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_distinct_events_for_distinct_payments_all_credit(make_user):
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip("needs a file or server database (threads)")
    users = [make_user() for _ in range(4)]
    bodies = [event_body(make_payment(u, session=f"cs_{i}")) for i, u in enumerate(users)]
    bodies = bodies * 2  # each delivered twice, all at once
    barrier = threading.Barrier(len(bodies))
    statuses = []

    def deliver(body):
        try:
            client = Client()
            barrier.wait()
            statuses.append(post(client, body, sign(body)).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * len(bodies)
    for u in users:
        assert wallet_balance(user=u) == (1000, 0)
    assert StripeEvent.objects.count() == 4


@pytest.mark.django_db
@pytest.mark.parametrize("skew", [-290, 60, 290])
def test_timestamps_within_the_tolerance_either_way_are_accepted(client, user, skew):
    """Clocks differ a little: a signature a few minutes old or ahead is still genuine."""
    payment = make_payment(user)
    body = event_body(payment)
    assert post(client, body, sign(body, timestamp=int(time.time()) + skew)).status_code == 200
    assert wallet_balance(user=user) == (1000, 0)
