"""Sign-up limits per client address and per email domain, and which sign-ups earn free credits."""

from __future__ import annotations

import itertools

import pytest
from django.contrib.auth import get_user_model

from accounts import selectors
from accounts.models import Signup
from accounts.services import email_mailbox
from tests.factories import make_user

pytestmark = [pytest.mark.django_db]

SIGNUP = "/accounts/signup/"
PASSWORD = "a-Long-enough-pw-42"
_numbers = itertools.count()


def sign_up(client, email: str | None = None, **headers):
    email = email or f"person{next(_numbers)}@example.com"
    return client.post(SIGNUP, {"email": email, "password1": PASSWORD, "password2": PASSWORD}, **headers)


def signed_up(response) -> bool:
    return response.status_code == 302 and response["Location"].endswith("/accounts/confirm-email/")


def users() -> int:
    return get_user_model().objects.count()


@pytest.mark.database
def test_one_address_opens_at_most_the_hourly_number_of_accounts(client, settings):
    settings.STUDIO_SIGNUPS_PER_ADDRESS_PER_HOUR = 3
    for _ in range(3):
        assert signed_up(sign_up(client, REMOTE_ADDR="198.51.100.5"))
    response = sign_up(client, REMOTE_ADDR="198.51.100.5")
    assert response.status_code == 200 and users() == 3
    message = "Too many accounts were opened from your network lately (at most 3 an hour)"
    assert message in response.content.decode()
    assert signed_up(sign_up(client, REMOTE_ADDR="198.51.100.6"))  # another address is not affected


@pytest.mark.database
def test_one_address_opens_at_most_the_daily_number_of_accounts(client, settings):
    settings.STUDIO_SIGNUPS_PER_ADDRESS_PER_HOUR = 0
    settings.STUDIO_SIGNUPS_PER_ADDRESS_PER_DAY = 2
    for _ in range(2):
        assert signed_up(sign_up(client, REMOTE_ADDR="198.51.100.5"))
    Signup.objects.update(created_at=Signup.objects.first().created_at.replace(year=2000))  # long ago
    assert signed_up(sign_up(client, REMOTE_ADDR="198.51.100.5"))
    assert signed_up(sign_up(client, REMOTE_ADDR="198.51.100.5"))
    response = sign_up(client, REMOTE_ADDR="198.51.100.5")
    assert not signed_up(response) and "at most 2 a day" in response.content.decode()


@pytest.mark.database
def test_one_email_domain_opens_at_most_the_hourly_number_of_accounts(client, settings):
    settings.STUDIO_SIGNUPS_PER_DOMAIN_PER_HOUR = 2
    for number in range(2):
        assert signed_up(sign_up(client, f"bot{number}@farm.example", REMOTE_ADDR=f"203.0.113.{number}"))
    response = sign_up(client, "bot9@FARM.example", REMOTE_ADDR="203.0.113.9")
    assert not signed_up(response) and users() == 2
    assert "Too many accounts with @farm.example addresses" in response.content.decode()
    assert signed_up(sign_up(client, "someone@elsewhere.example", REMOTE_ADDR="203.0.113.9"))


def test_behind_the_trusted_proxy_each_client_has_its_own_allowance(client, settings):
    settings.STUDIO_SIGNUPS_PER_ADDRESS_PER_HOUR = 2
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 1
    for number in range(4):
        assert signed_up(sign_up(client, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"198.51.100.{number}"))
    assert set(Signup.objects.values_list("address", flat=True)) == {f"198.51.100.{n}" for n in range(4)}
    # What a client writes into X-Forwarded-For itself does not give it a new allowance.
    spoofed = [sign_up(client, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 198.51.100.0")
               for n in range(2)]
    assert signed_up(spoofed[0]) and not signed_up(spoofed[1])


def test_without_a_trusted_proxy_x_forwarded_for_is_ignored(client, settings):
    settings.STUDIO_SIGNUPS_PER_ADDRESS_PER_HOUR = 2
    results = [sign_up(client, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
               for n in range(3)]
    assert [signed_up(r) for r in results] == [True, True, False]
    assert set(Signup.objects.values_list("address", flat=True)) == {"10.0.0.1"}


@pytest.mark.database
def test_free_credits_only_for_the_first_sign_ups_of_an_address_each_day(client, settings):
    settings.STUDIO_FREE_CREDITS_PER_ADDRESS_PER_DAY = 2
    for _ in range(3):
        assert signed_up(sign_up(client, REMOTE_ADDR="198.51.100.5"))
    assert signed_up(sign_up(client, REMOTE_ADDR="198.51.100.6"))
    due = [selectors.free_credits_due(user=signup.user) for signup in Signup.objects.order_by("pk")]
    assert due == [True, True, False, True]


@pytest.mark.database
def test_a_second_account_for_the_same_mailbox_earns_no_free_credits(client):
    assert signed_up(sign_up(client, "Jane.Doe@gmail.com", REMOTE_ADDR="198.51.100.1"))
    assert signed_up(sign_up(client, "janedoe+studio@googlemail.com", REMOTE_ADDR="198.51.100.2"))
    assert signed_up(sign_up(client, "jane+1@example.com", REMOTE_ADDR="198.51.100.3"))
    assert signed_up(sign_up(client, "jane+2@example.com", REMOTE_ADDR="198.51.100.4"))
    due = {signup.user.email: selectors.free_credits_due(user=signup.user) for signup in Signup.objects.all()}
    assert due == {"jane.doe@gmail.com": True, "janedoe+studio@googlemail.com": False,
                   "jane+1@example.com": True, "jane+2@example.com": False}


def test_accounts_made_without_the_sign_up_form_keep_their_free_credits():
    assert selectors.free_credits_due(user=make_user())


@pytest.mark.parametrize("email, mailbox", [
    ("Jane.Doe+x@Gmail.com", "janedoe@gmail.com"), ("j.d@googlemail.com", "jd@gmail.com"),
    ("first.last+tag@example.com", "first.last@example.com"), ("plain@example.com", "plain@example.com"),
])
def test_mailbox(email, mailbox):
    assert email_mailbox(email) == mailbox


@pytest.mark.database
def test_sign_up_form_posts_are_rate_limited_with_a_429(client):
    """Ten posts a minute per address (typos included), then a plain 429 page, not a 500."""
    bad = {"email": "someone@example.com", "password1": PASSWORD, "password2": "another-pw-42"}
    statuses = [client.post(SIGNUP, bad, REMOTE_ADDR="198.51.100.9").status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    assert client.post(SIGNUP, bad, REMOTE_ADDR="198.51.100.10").status_code == 200
