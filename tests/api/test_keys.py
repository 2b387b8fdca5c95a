"""API keys: made with the token shown once and only its hash kept, found by prefix, revoked,
scoped, owned by a user or a team (made by team admins only), capped per month through billing."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from django.test import override_settings
from django.utils import timezone

from accounts import services as accounts
from accounts.models import ApiKey, Membership, TeamRole
from accounts.selectors import api_key_authenticate, api_key_manageable_by
from billing import services as billing
from billing.models import EntryKind, LedgerEntry
from billing.selectors import api_key_usage_per_day, api_key_used_this_month, api_keys_spent
from generation import services as generation
from tests.api.conftest import fast_user as make_user
from tests.factories import give_credits

pytestmark = [pytest.mark.django_db]


def team_of(owner, **members):
    team = generation.team_create(user=owner, name="Blue")
    for role, user in members.items():
        Membership.objects.create(team=team, user=user, role=role)
    return team


def test_a_key_is_stored_as_a_hash_and_found_by_its_token():
    user = make_user()
    key, token = accounts.api_key_create(actor=user, name="  krita plugin ", scopes=["read_images", "generate"])
    assert token.startswith("sk_live_") and token[:16] == key.prefix and len(token) >= 16 + 1 + 43
    assert key.name == "krita plugin" and key.scopes == ["generate", "read_images"]  # canonical order
    stored = ApiKey.objects.get(pk=key.pk)
    assert stored.secret_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(ApiKey.objects.filter(pk=key.pk).values().get())  # nowhere in the row
    assert api_key_authenticate(token) == key
    assert api_key_authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None  # same prefix, wrong secret
    assert api_key_authenticate(key.prefix) is None
    assert api_key_authenticate("sk_live_" + "0" * 60) is None
    assert api_key_authenticate("x" * 10_000) is None
    other_key, other_token = accounts.api_key_create(actor=user, name="bot", scopes=["generate"])
    assert other_key.prefix != key.prefix and api_key_authenticate(other_token) == other_key


def test_revoked_keys_and_keys_of_deactivated_users_stop_working():
    user = make_user()
    key, token = accounts.api_key_create(actor=user, name="k", scopes=["generate"])
    stranger = make_user()
    with pytest.raises(accounts.ApiKeyRefused):
        accounts.api_key_revoke(actor=stranger, key=key)
    assert api_key_authenticate(token) == key
    accounts.api_key_revoke(actor=user, key=key)
    revoked_at = ApiKey.objects.get(pk=key.pk).revoked_at
    assert revoked_at is not None and api_key_authenticate(token) is None
    accounts.api_key_revoke(actor=user, key=key)  # again: nothing changes
    assert ApiKey.objects.get(pk=key.pk).revoked_at == revoked_at

    key2, token2 = accounts.api_key_create(actor=user, name="k2", scopes=["generate"])
    user.is_active = False
    user.save()
    assert api_key_authenticate(token2) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": " ", "scopes": ["generate"]}, "name"),
        ({"name": "x" * 101, "scopes": ["generate"]}, "100 characters"),
        ({"name": "k", "scopes": []}, "at least one scope"),
        ({"name": "k", "scopes": ["admin"]}, "Unknown scope"),
        ({"name": "k", "scopes": ["generate"], "monthly_credit_cap": 0}, "at least 1"),
        ({"name": "k", "scopes": ["generate"], "monthly_credit_cap": True}, "whole number"),
    ],
)
def test_bad_key_fields_are_refused_with_a_reason(fields, message):
    with pytest.raises(accounts.ApiKeyRefused, match=message):
        accounts.api_key_create(actor=make_user(), **fields)
    assert not ApiKey.objects.exists()


@override_settings(STUDIO_API_KEYS_MAX=2)
def test_the_number_of_active_keys_is_limited():
    user = make_user()
    first, _ = accounts.api_key_create(actor=user, name="a", scopes=["generate"])
    accounts.api_key_create(actor=user, name="b", scopes=["generate"])
    with pytest.raises(accounts.ApiKeyRefused, match="At most 2"):
        accounts.api_key_create(actor=user, name="c", scopes=["generate"])
    accounts.api_key_revoke(actor=user, key=first)
    accounts.api_key_create(actor=user, name="c", scopes=["generate"])


def test_team_keys_are_made_and_revoked_by_team_admins_only():
    owner, admin, member = make_user(), make_user(), make_user()
    team = team_of(owner, **{TeamRole.ADMIN: admin, TeamRole.MEMBER: member})
    with pytest.raises(accounts.ApiKeyRefused, match="admins"):
        accounts.api_key_create(actor=member, name="ci", scopes=["generate"], team=team)
    with pytest.raises(accounts.ApiKeyRefused):
        accounts.api_key_create(actor=make_user(), name="ci", scopes=["generate"], team=team)
    key, token = accounts.api_key_create(actor=admin, name="ci", scopes=["generate"], team=team)
    assert key.owner_team == team and key.owner_user is None and key.created_by == admin
    assert api_key_authenticate(token) == key
    assert api_key_manageable_by(user=owner, key_id=key.pk) == key
    assert api_key_manageable_by(user=member, key_id=key.pk) is None
    with pytest.raises(accounts.ApiKeyRefused):
        accounts.api_key_revoke(actor=member, key=key)
    accounts.api_key_revoke(actor=owner, key=key)
    assert api_key_authenticate(token) is None


@pytest.mark.parametrize("leaves", ["demoted", "removed", "left"])
def test_an_admin_who_stops_being_one_takes_their_team_keys_with_them(leaves):
    owner, admin, other_admin = make_user(), make_user(), make_user()
    team = team_of(owner, **{TeamRole.ADMIN: admin})
    Membership.objects.create(team=team, user=other_admin, role=TeamRole.ADMIN)
    _, theirs = accounts.api_key_create(actor=admin, name="theirs", scopes=["generate"], team=team)
    _, own = accounts.api_key_create(actor=admin, name="own", scopes=["generate"])
    _, colleagues = accounts.api_key_create(actor=other_admin, name="colleague's", scopes=["generate"], team=team)
    if leaves == "demoted":
        accounts.membership_change_role(team=team, actor=owner, user_id=admin.pk, role=TeamRole.MEMBER)
    elif leaves == "removed":
        accounts.membership_remove(team=team, actor=owner, user_id=admin.pk)
    else:
        accounts.membership_leave(team=team, user=admin)
    assert api_key_authenticate(theirs) is None
    assert api_key_authenticate(own) is not None and api_key_authenticate(colleagues) is not None


def test_last_used_is_written_at_most_once_a_minute():
    key, _ = accounts.api_key_create(actor=make_user(), name="k", scopes=["generate"])
    now = timezone.now()
    assert accounts.api_key_touch(key=key, now=now) is True
    assert accounts.api_key_touch(key=key, now=now + dt.timedelta(seconds=59)) is False
    stale = ApiKey.objects.get(pk=key.pk)  # another request's copy, read before the write
    stale.last_used_at = None
    assert accounts.api_key_touch(key=stale, now=now + dt.timedelta(seconds=30)) is False  # the row decides
    assert accounts.api_key_touch(key=key, now=now + dt.timedelta(seconds=61)) is True
    assert ApiKey.objects.get(pk=key.pk).last_used_at == now + dt.timedelta(seconds=61)


def test_spending_through_a_key_is_recorded_capped_and_counted_per_day():
    user = make_user()
    give_credits(user, 100)
    key, _ = accounts.api_key_create(actor=user, name="k", scopes=["generate"], monthly_credit_cap=10)
    billing.credits_reserve(user=user, subject="job:a", amount=6, api_key=key)
    with pytest.raises(billing.ApiKeyCapReached, match="may spend 10 a month") as refused:
        billing.credits_reserve(user=user, subject="job:b", amount=5, api_key=key)
    assert isinstance(refused.value, billing.InsufficientCredits) and refused.value.available == 4
    billing.credits_reserve(user=user, subject="job:c", amount=5)  # the same user without the key: no cap
    billing.credits_capture(subject="job:a", amount=4)  # 2 of 6 come back
    assert api_key_used_this_month(api_key_id=key.pk) == 4
    billing.credits_reserve(user=user, subject="job:d", amount=6, api_key=key)
    billing.credits_release(subject="job:d", reason="failed")
    assert set(LedgerEntry.objects.filter(subject__in=["job:a", "job:d"]).values_list("api_key_id", flat=True)) == {key.pk}
    assert LedgerEntry.objects.get(subject="job:c", kind=EntryKind.RESERVE).api_key_id is None
    days = api_key_usage_per_day(api_key_id=key.pk, days=3)
    assert [d.day for d in days][-1] == timezone.now().date() and len(days) == 3
    assert (days[-1].charges, days[-1].spent) == (1, 4) and days[0].spent == 0
    assert api_keys_spent(api_key_ids=[key.pk]) == {key.pk: 4}
