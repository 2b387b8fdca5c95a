"""Pages: credits, packs, test purchases, and the header fragment."""

from __future__ import annotations

import pytest
from django.urls import reverse

from billing.models import CreditPack, LedgerEntry, Payment
from billing.selectors import wallet_balance
from billing.services import credits_capture, credits_reserve
from tests.billing.support import give, make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def pack(db):
    return CreditPack.objects.create(name="Starter", credits=1000, price_cents=1000, currency="usd")


def test_pages_need_login(client):
    for name in ("billing:credits", "billing:packs"):
        response = client.get(reverse(name))
        assert response.status_code == 302, name


def test_credits_page_shows_balance_holds_history_and_purchases(client, user):
    give(user, 50)
    running = make_job(user)
    credits_reserve(user=running.user, subject=running.subject, amount=4)
    done = make_job(user)
    credits_reserve(user=done.user, subject=done.subject, amount=4)
    credits_capture(subject=done.subject, amount=4)
    client.force_login(user)
    response = client.get(reverse("billing:credits"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="credit-balance"' in html  # the header fragment, through the context processor
    assert ">42<" in html  # available
    assert ">4<" in html  # held
    assert str(running.pk)[:8] in html  # the open hold
    assert "Spent" in html and "Reserved" in html and "Adjustment" in html
    assert "No purchases yet." in html


def test_context_processor_and_balance_fragment(rf, user):
    from django.template.loader import render_to_string

    from billing.context_processors import wallet

    request = rf.get("/")
    request.user = user
    context = wallet(request)
    assert (context["wallet_balance"](), context["wallet_held"]()) == (0, 0)
    give(user, 7)
    context = wallet(request)
    assert (context["wallet_balance"](), context["wallet_held"]()) == (7, 0)
    html = render_to_string("billing/_balance.html", context)
    assert 'id="credit-balance"' in html and "7</span> credits" in html and "hx-swap-oob" not in html


def test_context_processor_is_lazy(rf, user, django_assert_num_queries):
    from django.template import engines

    from billing.context_processors import wallet

    request = rf.get("/")
    request.user = user
    give(user, 1234)
    with django_assert_num_queries(0):
        context = wallet(request)
    template = engines["django"].from_string("{{ wallet_balance }}/{{ wallet_held }}")
    with django_assert_num_queries(1):
        assert template.render(context) == "1234/0"


def test_anonymous_context_is_empty(rf):
    from django.contrib.auth.models import AnonymousUser

    from billing.context_processors import wallet

    request = rf.get("/")
    request.user = AnonymousUser()
    assert wallet(request) == {}


def test_packs_page_without_stripe_says_not_configured(client, user, pack, settings):
    settings.STRIPE_SECRET_KEY = ""
    settings.STRIPE_WEBHOOK_SECRET = ""
    settings.STUDIO_BILLING_TEST_PURCHASES = False
    client.force_login(user)
    html = client.get(reverse("billing:packs")).content.decode()
    assert "Payments are not configured" in html
    assert "$10.00" in html and "1,000 credits" in html
    assert "Test purchase" not in html
    assert reverse("billing:checkout", args=[pack.pk]) not in html


def test_checkout_without_stripe_redirects_back_with_message(client, user, pack, settings):
    settings.STRIPE_SECRET_KEY = ""
    client.force_login(user)
    response = client.post(reverse("billing:checkout", args=[pack.pk]))
    assert response.status_code == 302 and response.url == reverse("billing:packs")
    assert not Payment.objects.exists()


def test_test_purchase_disabled_is_404(client, user, pack, settings):
    settings.STUDIO_BILLING_TEST_PURCHASES = False
    client.force_login(user)
    assert client.post(reverse("billing:test_purchase", args=[pack.pk])).status_code == 404
    assert wallet_balance(user=user) == (0, 0)


def test_test_purchase_when_enabled(client, user, pack, settings):
    settings.STUDIO_BILLING_TEST_PURCHASES = True
    client.force_login(user)
    html = client.get(reverse("billing:packs")).content.decode()
    assert "Test-purchase mode is on" in html and "Test purchase (no money)" in html
    response = client.post(reverse("billing:test_purchase", args=[pack.pk]))
    assert response.status_code == 302
    assert wallet_balance(user=user) == (1000, 0)
    payment = Payment.objects.get()
    assert (payment.provider, payment.status, payment.credits) == ("test", "paid", 1000)
    assert LedgerEntry.objects.get(kind="purchase").payment == payment
    html = client.get(reverse("billing:credits")).content.decode()
    assert "test purchase, no money" in html


def test_test_purchase_needs_post(client, user, pack, settings):
    settings.STUDIO_BILLING_TEST_PURCHASES = True
    client.force_login(user)
    assert client.get(reverse("billing:test_purchase", args=[pack.pk])).status_code == 405


def test_checkout_return_proves_nothing(client, user):
    client.force_login(user)
    response = client.get(reverse("billing:checkout_return"), {"session_id": "cs_test_forged"})
    assert response.status_code == 200
    assert wallet_balance(user=user) == (0, 0)


def test_checkout_creates_a_pending_payment_and_redirects_to_stripe(client, user, pack, settings, monkeypatch):
    import stripe

    settings.STRIPE_SECRET_KEY = "sk_test_x"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_x"
    calls = []

    def fake_create(**kwargs):
        calls.append(kwargs)
        return {"id": "cs_test_123", "url": "https://checkout.stripe.com/c/pay/cs_test_123"}

    monkeypatch.setattr(stripe.checkout.Session, "create", fake_create)
    client.force_login(user)
    response = client.post(reverse("billing:checkout", args=[pack.pk]))
    assert response.status_code == 302 and response.url == "https://checkout.stripe.com/c/pay/cs_test_123"
    payment = Payment.objects.get()
    assert (payment.status, payment.stripe_checkout_session_id, payment.credits, payment.amount_cents) == (
        "pending", "cs_test_123", 1000, 1000)
    (kwargs,) = calls
    assert kwargs["metadata"] == {"payment_id": str(payment.pk)}
    assert kwargs["line_items"][0]["price_data"]["unit_amount"] == 1000
    assert kwargs["api_key"] == "sk_test_x" and kwargs["mode"] == "payment"
    assert "{CHECKOUT_SESSION_ID}" in kwargs["success_url"]
    assert wallet_balance(user=user) == (0, 0)  # nothing until the webhook says paid


def test_checkout_when_stripe_fails(client, user, pack, settings, monkeypatch):
    import stripe

    settings.STRIPE_SECRET_KEY = "sk_test_x"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_x"

    def boom(**kwargs):
        raise stripe.APIConnectionError("down")

    monkeypatch.setattr(stripe.checkout.Session, "create", boom)
    client.force_login(user)
    response = client.post(reverse("billing:checkout", args=[pack.pk]))
    assert response.status_code == 302 and response.url == reverse("billing:packs")


def test_subject_charge(user):
    from billing.selectors import subject_charge

    give(user, 20)
    job = make_job(user, num_images=4)
    credits_reserve(user=job.user, subject=job.subject, amount=16)
    assert subject_charge(subject=job.subject) == {"reserved": 16, "captured": 0, "released": 0, "refunded": 0, "on_hold": 16, "spent": 0}
    credits_capture(subject=job.subject, amount=12)
    assert subject_charge(subject=job.subject) == {"reserved": 16, "captured": 12, "released": 4, "refunded": 0, "on_hold": 0, "spent": 12}
