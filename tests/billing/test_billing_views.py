"""Pages: credits, packs, test purchases, the live quote, and the header fragment."""

from __future__ import annotations

import pytest
from django.urls import reverse

from billing.models import CreditPack, LedgerEntry, Payment
from billing.selectors import wallet_balance
from billing.services import credits_capture, credits_reserve, job_price
from tests.billing.support import give, make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def pack(db):
    return CreditPack.objects.create(name="Starter", credits=1000, price_cents=1000, currency="usd")


def test_pages_need_login(client):
    for name in ("billing:credits", "billing:packs", "billing:quote"):
        response = client.get(reverse(name))
        assert response.status_code == 302, name


def test_credits_page_shows_balance_holds_history_and_purchases(client, user):
    give(user, 50)
    running = make_job(user)
    credits_reserve(job=running, amount=4)
    done = make_job(user)
    credits_reserve(job=done, amount=4)
    credits_capture(job=done, amount=4)
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


@pytest.mark.parametrize(
    "params,expected",
    [
        ({"width": 512, "height": 512, "steps": 30, "num_images": 1}, "4 credits"),
        ({"width": 512, "height": 512, "steps": 30, "num_images": 4}, "16 credits"),
        ({"width": 1024, "height": 1024, "steps": 30, "num_images": 1, "aspect": "16:9"}, "16 credits"),
    ],
)
def test_quote(client, user, params, expected):
    give(user, 10)
    client.force_login(user)
    response = client.get(reverse("billing:quote"), params)
    assert response.status_code == 200
    html = response.content.decode()
    assert expected in html and "(you have 10)" in html and 'id="cost-quote"' in html


def test_quote_from_aspect_uses_the_create_forms_size(client, user):
    from billing.views import _size_from_aspect

    width, height, model_name = _size_from_aspect("3:2")
    expected = job_price(width=width, height=height, steps=30, num_images=2, model_name=model_name)
    client.force_login(user)
    html = client.get(
        reverse("billing:quote"), {"width": "", "height": "", "aspect": "3:2", "steps": 30, "num_images": 2}
    ).content.decode()
    assert f'data-cost="{expected}"' in html
    assert width > height


def test_quote_unaffordable_links_to_packs(client, user):
    give(user, 3)
    client.force_login(user)
    html = client.get(reverse("billing:quote"), {"width": 512, "height": 512, "steps": 30, "num_images": 1}).content.decode()
    assert "Not enough credits" in html and reverse("billing:packs") in html


@pytest.mark.parametrize(
    "params",
    [{}, {"steps": "x"}, {"width": -5, "height": 512, "steps": 30, "num_images": 1},
     {"width": 512, "height": 512, "steps": 30, "num_images": 99}, {"aspect": "7:1", "steps": 30, "num_images": 1},
     {"width": "1e9", "height": "512", "steps": "30", "num_images": "1"}],
)
def test_quote_bad_params_are_neutral(client, user, params):
    client.force_login(user)
    response = client.get(reverse("billing:quote"), params)
    assert response.status_code == 200
    assert "Cost: —" in response.content.decode()


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


def test_quote_sizes_an_aspect_ratio_as_the_create_form_does():
    from billing.views import _size_from_aspect
    from generation.selectors import model_info

    info = model_info()
    assert _size_from_aspect("1:1") == (info.native_width, info.native_height, info.name)
    wide_width, wide_height, _ = _size_from_aspect("16:9")
    assert wide_height == info.native_height and wide_width > wide_height


def test_job_charge(user):
    from billing.selectors import job_charge

    give(user, 20)
    job = make_job(user, num_images=4)
    credits_reserve(job=job, amount=16)
    assert job_charge(job=job) == {"reserved": 16, "captured": 0, "released": 0, "refunded": 0, "on_hold": 16, "spent": 0}
    credits_capture(job=job, amount=12)
    assert job_charge(job=job) == {"reserved": 16, "captured": 12, "released": 4, "refunded": 0, "on_hold": 0, "spent": 12}
