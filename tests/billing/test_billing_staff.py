"""Staff pages: search, grant/revoke with a mandatory reason, refunds, usage chart, CSV export."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid

import pytest
from django.urls import reverse

from billing.charts import usage_bar_chart
from billing.models import LedgerEntry
from billing.selectors import UsageDay, usage_per_day, wallet_balance
from billing.services import credits_capture, credits_reserve
from tests.billing.support import give, make_job

pytestmark = pytest.mark.django_db

STAFF_URLS = [
    ("billing:staff_users", []),
    ("billing:staff_usage", []),
    ("billing:staff_ledger_csv", []),
]


@pytest.mark.parametrize("name,args", STAFF_URLS)
def test_staff_pages_refuse_normal_users(client, user, name, args):
    client.force_login(user)
    response = client.get(reverse(name, args=args))
    assert response.status_code == 302 and "/admin/login/" in response.url


def test_user_detail_refuses_normal_users(client, user, make_user):
    other = make_user()
    client.force_login(user)
    response = client.post(
        reverse("billing:staff_user", args=[other.pk]),
        {"action": "grant", "amount": 100, "reason": "me", "token": str(uuid.uuid4())},
    )
    assert response.status_code == 302
    assert wallet_balance(user=other) == (0, 0)


def test_search_and_detail(client, staff, make_user):
    alice = make_user(email="alice@example.com")
    make_user(email="bob@example.com")
    give(alice, 33)
    client.force_login(staff)
    html = client.get(reverse("billing:staff_users"), {"q": "alice"}).content.decode()
    assert "alice@example.com" in html and "bob@example.com" not in html and ">33<" in html
    html = client.get(reverse("billing:staff_user", args=[alice.pk])).content.decode()
    assert "Grant or revoke" in html and "test funds" in html


def test_grant_and_revoke_through_the_form(client, staff, user):
    client.force_login(staff)
    url = reverse("billing:staff_user", args=[user.pk])
    token = str(uuid.uuid4())
    response = client.post(url, {"action": "grant", "amount": 25, "reason": "Support ticket 12", "token": token})
    assert response.status_code == 302
    # A double submit of the same form (same token) counts once.
    response = client.post(url, {"action": "grant", "amount": 25, "reason": "Support ticket 12", "token": token})
    assert response.status_code == 302
    assert wallet_balance(user=user) == (25, 0)
    response = client.post(url, {"action": "revoke", "amount": 5, "reason": "Mistake", "token": str(uuid.uuid4())})
    assert wallet_balance(user=user) == (20, 0)
    entry = LedgerEntry.objects.filter(kind="adjust").first()
    assert (entry.actor, entry.reason, entry.available_delta) == (staff, "Mistake", -5)


@pytest.mark.parametrize("data", [
    {"action": "grant", "amount": 25, "reason": ""},
    {"action": "grant", "amount": 25, "reason": "   "},
    {"action": "grant", "amount": 0, "reason": "x"},
    {"action": "steal", "amount": 5, "reason": "x"},
    {"action": "revoke", "amount": 500, "reason": "more than available"},
])
def test_invalid_adjustments_are_refused(client, staff, user, data):
    give(user, 10)
    client.force_login(staff)
    response = client.post(reverse("billing:staff_user", args=[user.pk]), {**data, "token": str(uuid.uuid4())})
    assert response.status_code == 400
    assert wallet_balance(user=user) == (10, 0)


def test_refund_through_the_form(client, staff, user):
    give(user, 10)
    job = make_job(user)
    credits_reserve(user=job.user, subject=job.subject, amount=4)
    credits_capture(subject=job.subject, amount=4)
    client.force_login(staff)
    url = reverse("billing:staff_refund")
    response = client.post(url, {"subject": job.subject, "reason": "Bad output", "user_id": user.pk})
    assert response.status_code == 302
    assert wallet_balance(user=user) == (10, 0)
    response = client.post(url, {"subject": job.subject, "reason": "again", "user_id": user.pk})
    assert response.status_code == 400
    assert wallet_balance(user=user) == (10, 0)
    response = client.post(url, {"subject": f"job:{uuid.uuid4()}", "reason": "x"})
    assert response.status_code == 302  # unknown job, no user: back to search with a message


def test_usage_page_has_inline_svg_and_top_spenders(client, staff, make_user):
    spender = make_user(email="spender@example.com")
    give(spender, 100)
    job = make_job(spender)
    credits_reserve(user=job.user, subject=job.subject, amount=8)
    credits_capture(subject=job.subject, amount=8)
    client.force_login(staff)
    html = client.get(reverse("billing:staff_usage")).content.decode()
    assert "<svg" in html and "<rect" in html and "spender@example.com" in html
    assert "<script" not in html.split("<main", 1)[1]  # server-rendered, no chart library
    today = usage_per_day(days=7)[-1]
    assert (today.granted, today.purchased, today.spent) == (100, 0, 8)


def test_usage_days_param_is_clamped(client, staff):
    client.force_login(staff)
    for days in ("0", "x", "100000"):
        assert client.get(reverse("billing:staff_usage"), {"days": days}).status_code == 200


def test_chart_geometry():
    day = dt.date(2026, 1, 1)
    rows = [UsageDay(day=day + dt.timedelta(days=i), granted=i * 10, purchased=0, spent=-5 if i == 0 else 7)
            for i in range(10)]
    chart = usage_bar_chart(rows)
    assert len(chart.bars) == 30
    assert all(b.height >= 0 and chart.plot_top <= b.y <= chart.plot_bottom for b in chart.bars)
    tallest = max(chart.bars, key=lambda b: b.height)
    assert tallest.series == "granted" and tallest.label.endswith("90 granted")
    assert chart.ticks[-1].label == "100"
    assert usage_bar_chart([]).bars == []


def test_csv_export(client, staff, make_user):
    alice, bob = make_user(email="alice@example.com"), make_user(email="bob@example.com")
    give(alice, 10)
    give(bob, 20)
    from billing.services import credits_adjust

    credits_adjust(user=alice, amount=1, actor=staff, reason="=HYPERLINK(\"evil\")", idempotency_key="csv")
    client.force_login(staff)
    response = client.get(reverse("billing:staff_ledger_csv"))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 3
    assert {r["user_email"] for r in rows} == {"alice@example.com", "bob@example.com"}
    assert [r for r in rows if r["idempotency_key"] == "adjust:csv"][0]["reason"].startswith("'=")
    response = client.get(reverse("billing:staff_ledger_csv"), {"user": bob.pk})
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["available_delta"] for r in rows] == ["20"]


def test_admin_pages_render(client, make_user):
    admin_user = make_user(staff=True, is_superuser=True)
    give(admin_user, 5)
    client.force_login(admin_user)
    for name in ("wallet", "ledgerentry", "payment", "stripeevent", "pricesettings", "modelprice", "creditpack"):
        response = client.get(reverse(f"admin:billing_{name}_changelist"))
        assert response.status_code == 200, name
    entry = LedgerEntry.objects.first()
    assert client.get(reverse("admin:billing_ledgerentry_change", args=[entry.pk])).status_code == 200
    assert client.post(reverse("admin:billing_ledgerentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()
