"""Hostile query strings and methods on the billing pages: a clear 4xx (or a harmless 200 for
free-text search), never a 500. Runs on SQLite and again on PostgreSQL (NUL bytes, huge numbers)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.billing.support import give

pytestmark = [pytest.mark.django_db]

HUGE = "9" * 5000
NUL = "\x00"


@pytest.mark.database
@pytest.mark.parametrize("session_id", [NUL, "cs_test_" + NUL, "²", HUGE, "x" * 300, "cs_test_a b"])
def test_checkout_return_refuses_malformed_session_ids(client, user, session_id):
    client.force_login(user)
    assert client.get(reverse("billing:checkout_return"), {"session_id": session_id}).status_code == 400


def test_checkout_return_with_a_well_formed_session_id(client, user):
    client.force_login(user)
    response = client.get(reverse("billing:checkout_return"), {"session_id": "cs_test_a1B2c3"})
    assert response.status_code == 200 and b"Thank you" in response.content


@pytest.mark.database
@pytest.mark.parametrize("query", ["²", HUGE, NUL, "a" + NUL + "b", "١٢٣", "-1", "99999999999999999999"])
def test_staff_user_search_never_fails(client, staff, make_user, query):
    make_user(email="alice@example.com")
    client.force_login(staff)
    response = client.get(reverse("billing:staff_users"), {"q": query})
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        assert b"alice@example.com" not in response.content


def test_staff_user_search_by_id_and_email_still_works(client, staff, make_user):
    alice = make_user(email="alice@example.com")
    client.force_login(staff)
    assert b"alice@example.com" in client.get(reverse("billing:staff_users"), {"q": str(alice.pk)}).content
    assert b"alice@example.com" in client.get(reverse("billing:staff_users"), {"q": "ALICE@"}).content


@pytest.mark.database
@pytest.mark.parametrize("user_param", ["²", HUGE, NUL, "-1", "1.5", "abc", "99999999999999999999"])
def test_staff_ledger_csv_refuses_bad_user_ids(client, staff, user, user_param):
    give(user, 5)
    client.force_login(staff)
    response = client.get(reverse("billing:staff_ledger_csv"), {"user": user_param})
    assert response.status_code in (400, 404)


def test_staff_ledger_csv_for_one_user(client, staff, user):
    give(user, 5)
    client.force_login(staff)
    response = client.get(reverse("billing:staff_ledger_csv"), {"user": user.pk})
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="ledger-user-{user.pk}.csv"'


@pytest.mark.database
@pytest.mark.parametrize("days", ["²", HUGE, NUL])
def test_staff_usage_days_is_clamped(client, staff, days):
    client.force_login(staff)
    assert client.get(reverse("billing:staff_usage"), {"days": days}).status_code == 200


@pytest.mark.database
@pytest.mark.parametrize("page", ["²", HUGE, NUL, "-1"])
def test_credit_history_pages_never_fail(client, user, page):
    give(user, 5)
    client.force_login(user)
    assert client.get(reverse("billing:credits"), {"page": page}).status_code == 200


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_staff_user_page_allows_only_get_and_post(client, staff, user, method):
    give(user, 5)
    client.force_login(staff)
    response = getattr(client, method)(reverse("billing:staff_user", args=[user.pk]))
    assert response.status_code == 405
    assert sorted(response["Allow"].split(", ")) == ["GET", "HEAD", "POST"]
