"""Team wallets: transfers from a member's own wallet (both sides), per-member caps enforced at
reservation time, team pack purchases, usage per member and month, the team credits page and
who may do what there, and the rest of billing (checks, staff pages, events, admin) with team
wallets in it."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts import realtime  # the process send loop that billing.events sends through
from accounts.models import Membership, TeamRole
from billing.models import CreditPack, EntryKind, LedgerEntry, MemberCap, Payment, Wallet
from billing.selectors import (
    member_used_this_month,
    team_usage_by_member_month,
    team_wallet_balance,
    team_wallet_history,
    wallet_balance,
)
from billing.services import (
    AlreadyRecorded,
    InsufficientCredits,
    MemberCapReached,
    NotATeamMember,
    TeamWalletNotAllowed,
    credits_capture,
    credits_refund,
    credits_release,
    credits_reserve,
    credits_transfer_to_team,
    member_cap_clear,
    member_cap_set,
    payment_checkout_start,
    payment_test_purchase,
    wallet_get_or_create_for_team,
)
from billing.services.teams import lock_wallets_in_order
from tests.billing.support import assert_wallet_consistent, fund_team, give, make_job, make_team

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return {role: make_user(email=f"{role}@example.com") for role in ("owner", "admin", "member", "viewer", "other")}


@pytest.fixture
def team(people):
    return make_team(
        people["owner"],
        members={people["admin"]: TeamRole.ADMIN, people["member"]: TeamRole.MEMBER, people["viewer"]: TeamRole.VIEWER},
    )


def transfer(user, team, amount, key=None):
    return credits_transfer_to_team(user=user, team=team, amount=amount, idempotency_key=key or uuid.uuid4().hex)


def reserve_for_team(member, team, amount):
    job = make_job(member)
    credits_reserve(user=member, subject=job.subject, amount=amount, team=team)
    return job


# --- transfers -------------------------------------------------------------------------------------


def test_transfer_writes_an_entry_on_both_sides_in_one_go(people, team):
    admin = people["admin"]
    give(admin, 100)
    result = transfer(admin, team, 30, key="t1")
    assert wallet_balance(user=admin) == (70, 0)
    assert team_wallet_balance(team_id=team.pk) == (30, 0)
    out_entry, in_entry = result.out_entry, result.in_entry
    assert (out_entry.kind, out_entry.available_delta, out_entry.idempotency_key) == (
        EntryKind.TRANSFER_OUT, -30, "transfer:t1:out")
    assert (in_entry.kind, in_entry.available_delta, in_entry.idempotency_key) == (
        EntryKind.TRANSFER_IN, 30, "transfer:t1:in")
    assert out_entry.wallet.owner_user_id == admin.pk and in_entry.wallet.owner_team_id == team.pk
    assert out_entry.actor_id == in_entry.actor_id == admin.pk
    assert "Acme" in out_entry.reason and "admin@example.com" in in_entry.reason
    assert_wallet_consistent(out_entry.wallet_id)
    assert_wallet_consistent(in_entry.wallet_id)


def test_transfer_is_idempotent_by_key(people, team):
    give(people["owner"], 100)
    transfer(people["owner"], team, 40, key="same")
    with pytest.raises(AlreadyRecorded):
        transfer(people["owner"], team, 40, key="same")
    assert wallet_balance(user=people["owner"]) == (60, 0)
    assert team_wallet_balance(team_id=team.pk) == (40, 0)


def test_transfer_of_more_than_i_have_moves_nothing(people, team):
    admin = people["admin"]
    give(admin, 10)
    with pytest.raises(InsufficientCredits) as raised:
        transfer(admin, team, 11)
    assert str(raised.value) == "Not enough credits: this needs 11, you have 10."
    assert wallet_balance(user=admin) == (10, 0)
    assert team_wallet_balance(team_id=team.pk) == (0, 0)
    assert not LedgerEntry.objects.filter(kind__in=[EntryKind.TRANSFER_IN, EntryKind.TRANSFER_OUT]).exists()


@pytest.mark.parametrize("amount", [0, -5, 10**9, 2.5, "7"])
def test_transfer_refuses_bad_amounts(people, team, amount):
    give(people["owner"], 100)
    with pytest.raises(ValueError):
        transfer(people["owner"], team, amount)
    assert wallet_balance(user=people["owner"]) == (100, 0)


@pytest.mark.parametrize("who", ["member", "viewer", "other"])
def test_only_owner_and_admins_may_transfer(people, team, who):
    give(people[who], 100)
    with pytest.raises(TeamWalletNotAllowed):
        transfer(people[who], team, 10)
    assert wallet_balance(user=people[who]) == (100, 0)


def test_a_deactivated_admin_may_not_transfer(people, team):
    give(people["admin"], 100)
    people["admin"].is_active = False
    people["admin"].save()
    with pytest.raises(TeamWalletNotAllowed):
        transfer(people["admin"], team, 10)


def test_wallet_locks_are_taken_lowest_id_first(people, team):
    """The team's wallet is older (lower id) than the admin's here: it is locked first."""
    team_wallet = wallet_get_or_create_for_team(team=team)
    give(people["admin"], 50)
    user_wallet = Wallet.objects.get(owner_user=people["admin"])
    assert team_wallet.pk < user_wallet.pk
    with CaptureQueriesContext(connection) as queries:
        transfer(people["admin"], team, 5)
    table = Wallet._meta.db_table
    locks = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT") and f'"{table}"."id" = ' in q["sql"]
             and "LIMIT 21" in q["sql"]]
    assert len(locks) >= 2
    assert f"= {team_wallet.pk}" in locks[0] and f"= {user_wallet.pk}" in locks[1]
    with CaptureQueriesContext(connection) as queries:
        lock_wallets_in_order(user_wallet.pk, team_wallet.pk)
    assert [f"= {team_wallet.pk}" in q["sql"] for q in queries.captured_queries] == [True, False]


# --- caps ------------------------------------------------------------------------------------------


def test_cap_is_enforced_at_reservation_time_with_a_clear_message(people, team):
    fund_team(team, people["owner"], 200)
    member_cap_set(actor=people["admin"], team=team, member=people["member"], monthly_credits=10)
    reserve_for_team(people["member"], team, 6)
    with pytest.raises(MemberCapReached) as raised:
        reserve_for_team(people["member"], team, 5)
    message = str(raised.value)
    assert "your monthly limit on Acme's credits is 10" in message and "used 6 this month" in message
    assert "needs 5 credits" in message
    assert isinstance(raised.value, InsufficientCredits) and raised.value.available == 4
    reserve_for_team(people["member"], team, 4)  # exactly up to the cap is fine
    assert member_used_this_month(wallet_id=wallet_get_or_create_for_team(team=team).pk, user_id=people["member"].pk) == 10
    assert team_wallet_balance(team_id=team.pk) == (190, 10)
    # Another member is not limited by this member's cap.
    reserve_for_team(people["admin"], team, 50)


def test_released_and_refunded_credits_give_headroom_back_captured_ones_do_not(people, team):
    fund_team(team, people["owner"], 200)
    member_cap_set(actor=people["owner"], team=team, member=people["member"], monthly_credits=10)
    failed = reserve_for_team(people["member"], team, 10)
    credits_release(subject=failed.subject, reason="failed")
    done = reserve_for_team(people["member"], team, 10)
    credits_capture(subject=done.subject, amount=8)  # 2 released
    reserve_for_team(people["member"], team, 2)
    with pytest.raises(MemberCapReached):
        reserve_for_team(people["member"], team, 1)
    credits_refund(subject=done.subject, actor=people["other"], reason="bad image")
    reserve_for_team(people["member"], team, 8)


def test_cap_zero_and_clearing_it(people, team):
    fund_team(team, people["owner"], 100)
    member_cap_set(actor=people["owner"], team=team, member=people["member"], monthly_credits=0)
    with pytest.raises(MemberCapReached):
        reserve_for_team(people["member"], team, 1)
    assert member_cap_clear(actor=people["owner"], team=team, member=people["member"]) is True
    assert member_cap_clear(actor=people["owner"], team=team, member=people["member"]) is False
    reserve_for_team(people["member"], team, 100)
    with pytest.raises(InsufficientCredits) as raised:  # the balance still binds
        reserve_for_team(people["member"], team, 1)
    assert not isinstance(raised.value, MemberCapReached)


def test_cap_set_updates_one_row_and_records_who(people, team):
    member_cap_set(actor=people["owner"], team=team, member=people["member"], monthly_credits=10)
    cap = member_cap_set(actor=people["admin"], team=team, member=people["member"], monthly_credits=25)
    assert MemberCap.objects.get() == cap and (cap.monthly_credits, cap.set_by_id) == (25, people["admin"].pk)


@pytest.mark.parametrize("who", ["member", "viewer", "other"])
def test_only_owner_and_admins_set_caps(people, team, who):
    with pytest.raises(TeamWalletNotAllowed):
        member_cap_set(actor=people[who], team=team, member=people["member"], monthly_credits=5)
    with pytest.raises(TeamWalletNotAllowed):
        member_cap_clear(actor=people[who], team=team, member=people["member"])
    assert not MemberCap.objects.exists()


def test_caps_only_for_members_and_sane_amounts(people, team):
    with pytest.raises(NotATeamMember):
        member_cap_set(actor=people["owner"], team=team, member=people["other"], monthly_credits=5)
    for bad in (-1, 10**9, "5", 1.5):
        with pytest.raises(ValueError):
            member_cap_set(actor=people["owner"], team=team, member=people["member"], monthly_credits=bad)


def test_last_months_use_does_not_count_against_this_months_cap(people, team):
    fund_team(team, people["owner"], 100)
    member_cap_set(actor=people["owner"], team=team, member=people["member"], monthly_credits=10)
    old = reserve_for_team(people["member"], team, 10)
    credits_capture(subject=old.subject, amount=10)
    last_month = dt.datetime.now(dt.timezone.utc).replace(day=1) - dt.timedelta(days=3)
    with connection.cursor() as cursor:  # time passes: the ledger itself is append-only
        cursor.execute(f"UPDATE {LedgerEntry._meta.db_table} SET created_at = %s WHERE subject = %s",
                       [last_month, old.subject])
    reserve_for_team(people["member"], team, 10)
    usage = team_usage_by_member_month(team_id=team.pk)
    assert [(row.month.month, row.spent, row.on_hold) for row in usage] == [
        (dt.date.today().month, 0, 10), (last_month.month, 10, 0)]


# --- usage -----------------------------------------------------------------------------------------


def test_usage_per_member_per_month(people, team):
    fund_team(team, people["owner"], 500)
    member, admin = people["member"], people["admin"]
    member_cap_set(actor=people["owner"], team=team, member=member, monthly_credits=100)
    captured = reserve_for_team(member, team, 20)
    credits_capture(subject=captured.subject, amount=15)
    released = reserve_for_team(member, team, 30)
    credits_release(subject=released.subject, reason="cancelled")
    reserve_for_team(member, team, 7)  # still open
    refunded = reserve_for_team(admin, team, 40)
    credits_capture(subject=refunded.subject, amount=40)
    credits_refund(subject=refunded.subject, actor=people["other"], reason="oops")
    spent = reserve_for_team(admin, team, 9)
    credits_capture(subject=spent.subject, amount=9)
    # Personal spending is not team usage.
    give(member, 10)
    personal = make_job(member)
    credits_reserve(user=member, subject=personal.subject, amount=10)

    usage = {row.email: row for row in team_usage_by_member_month(team_id=team.pk)}
    assert set(usage) == {"member@example.com", "admin@example.com"}
    assert (usage["member@example.com"].spent, usage["member@example.com"].on_hold, usage["member@example.com"].used,
            usage["member@example.com"].cap) == (15, 7, 22, 100)
    assert (usage["admin@example.com"].spent, usage["admin@example.com"].on_hold, usage["admin@example.com"].cap) == (
        9, 0, None)
    wallet_id = wallet_get_or_create_for_team(team=team).pk
    for person in (member, admin):  # the table and the cap count the same thing
        assert usage[person.email].used == member_used_this_month(wallet_id=wallet_id, user_id=person.pk)
    (mine,) = team_usage_by_member_month(team_id=team.pk, user_id=member.pk)
    assert mine.used == 22


def test_usage_query_count_does_not_grow_with_entries(people, team, django_assert_num_queries):
    fund_team(team, people["owner"], 1000)
    for amount in range(1, 30):
        job = reserve_for_team(people["member"], team, amount)
        if amount % 2:
            credits_capture(subject=job.subject, amount=amount)
    with django_assert_num_queries(2):  # the usage rows, the caps
        rows = team_usage_by_member_month(team_id=team.pk)
    assert rows[0].used == sum(range(1, 30))


def test_team_history_shows_transfers_purchases_and_spending(people, team, settings):
    settings.STUDIO_BILLING_TEST_PURCHASES = True
    fund_team(team, people["owner"], 50)
    pack = CreditPack.objects.create(name="Team pack", credits=1000, price_cents=1000)
    payment_test_purchase(user=people["admin"], pack=pack, team=team)
    job = reserve_for_team(people["member"], team, 4)
    kinds = list(team_wallet_history(team_id=team.pk).values_list("kind", "spender_id"))
    assert kinds == [(EntryKind.RESERVE, people["member"].pk), (EntryKind.PURCHASE, None),
                     (EntryKind.TRANSFER_IN, None)]
    assert job.subject in team_wallet_history(team_id=team.pk).first().subject


# --- team pack purchases ---------------------------------------------------------------------------


def test_test_purchase_for_a_team_credits_the_team_wallet(people, team, settings):
    settings.STUDIO_BILLING_TEST_PURCHASES = True
    pack = CreditPack.objects.create(name="Team pack", credits=1000, price_cents=1000)
    payment = payment_test_purchase(user=people["admin"], pack=pack, team=team)
    assert payment.wallet.owner_team_id == team.pk and payment.user_id == people["admin"].pk
    assert team_wallet_balance(team_id=team.pk) == (1000, 0)
    assert wallet_balance(user=people["admin"]) == (0, 0)
    with pytest.raises(TeamWalletNotAllowed):
        payment_test_purchase(user=people["member"], pack=pack, team=team)
    assert Payment.objects.count() == 1


def test_my_purchases_say_which_were_for_a_team(client, people, team, settings):
    settings.STUDIO_BILLING_TEST_PURCHASES = True
    pack = CreditPack.objects.create(name="Team pack", credits=1000, price_cents=1000)
    payment_test_purchase(user=people["admin"], pack=pack, team=team)
    payment_test_purchase(user=people["admin"], pack=pack)
    client.force_login(people["admin"])
    html = client.get(reverse("billing:credits")).content.decode()
    assert html.count("<td>Team pack") == 2 and html.count("for team Acme") == 1


def test_stripe_checkout_for_a_team_is_credited_to_the_team_by_the_webhook(people, team, settings, monkeypatch,
                                                                          client):
    import stripe

    from tests.billing.test_billing_webhook import SECRET, event_body, post, sign

    settings.STRIPE_SECRET_KEY, settings.STRIPE_WEBHOOK_SECRET = "sk_test_x", SECRET
    calls = []
    monkeypatch.setattr(stripe.checkout.Session, "create",
                        lambda **kw: calls.append(kw) or {"id": "cs_test_team", "url": "https://checkout.stripe.com/x"})
    pack = CreditPack.objects.create(name="Team pack", credits=1000, price_cents=1000)
    payment_checkout_start(user=people["owner"], pack=pack, team=team, success_url="https://s/r", cancel_url="https://s/c")
    payment = Payment.objects.get()
    assert payment.wallet.owner_team_id == team.pk
    assert "for team Acme" in calls[0]["line_items"][0]["price_data"]["product_data"]["name"]
    body = event_body(payment)
    assert post(client, body, sign(body)).status_code == 200
    assert team_wallet_balance(team_id=team.pk) == (1000, 0)
    assert wallet_balance(user=people["owner"]) == (0, 0)
    with pytest.raises(TeamWalletNotAllowed):
        payment_checkout_start(user=people["viewer"], pack=pack, team=team, success_url="x", cancel_url="y")


# --- the page --------------------------------------------------------------------------------------


def page(team):
    return reverse("billing:team_credits", args=[team.pk])


def test_non_members_get_404_everywhere_and_anonymous_must_log_in(client, people, team, settings):
    settings.STUDIO_BILLING_TEST_PURCHASES = True
    pack = CreditPack.objects.create(name="P", credits=10, price_cents=100)
    urls = [
        ("get", page(team)),
        ("post", reverse("billing:team_transfer", args=[team.pk])),
        ("post", reverse("billing:team_member_cap", args=[team.pk, people["member"].pk])),
        ("post", reverse("billing:team_test_purchase", args=[team.pk, pack.pk])),
        ("post", reverse("billing:team_checkout", args=[team.pk, pack.pk])),
    ]
    for method, url in urls:
        assert getattr(client, method)(url).status_code == 302, url
    client.force_login(people["other"])
    for method, url in urls:
        assert getattr(client, method)(url, {"amount": "5"}).status_code == 404, url
    assert client.get(reverse("billing:team_credits", args=[uuid.uuid4()])).status_code == 404


@pytest.mark.parametrize("who", ["member", "viewer"])
def test_members_and_viewers_see_the_balance_and_their_own_usage_only(client, people, team, who):
    fund_team(team, people["owner"], 300)
    member_cap_set(actor=people["owner"], team=team, member=people["member"], monthly_credits=50)
    reserve_for_team(people["member"], team, 12)
    reserve_for_team(people["admin"], team, 33)
    client.force_login(people[who])
    response = client.get(page(team))
    assert response.status_code == 200
    html = response.content.decode()
    assert ">255<" in html and ">45<" in html  # available, held
    assert "admin@example.com" not in html and ">33<" not in html  # nobody else's usage
    assert "Move credits" not in html and "Monthly limits per member" not in html and "History" not in html
    if who == "member":
        assert ">12<" in html and "Your monthly limit on these credits: <strong>50</strong>" in html
    else:
        assert "No credits used yet." in html and "no monthly limit" in html


@pytest.mark.parametrize("who", ["owner", "admin"])
def test_managers_see_everything(client, people, team, who, settings):
    settings.STUDIO_BILLING_TEST_PURCHASES = True
    CreditPack.objects.create(name="Team pack", credits=1000, price_cents=1000)
    fund_team(team, people["owner"], 300)
    member_cap_set(actor=people["owner"], team=team, member=people["member"], monthly_credits=50)
    reserve_for_team(people["member"], team, 12)
    client.force_login(people[who])
    html = client.get(page(team)).content.decode()
    assert f'href="/teams/{team.pk}/"' in html  # back to the team page (settings.BILLING_TEAM_URL_NAME)
    for text in ("Move credits from your wallet", "Team pack", "Test purchase (no money)", "Monthly limits per member",
                 "member@example.com", "viewer@example.com", "Use per member and month", "History", "Transfer in",
                 "Reserved", 'value="50"', "No limit"):
        assert text in html, text


def test_transfer_through_the_page(client, people, team):
    admin = people["admin"]
    give(admin, 100)
    client.force_login(admin)
    token = str(uuid.uuid4())
    response = client.post(reverse("billing:team_transfer", args=[team.pk]), {"amount": "40", "token": token})
    assert response.status_code == 302 and response.url == page(team)
    assert (wallet_balance(user=admin), team_wallet_balance(team_id=team.pk)) == ((60, 0), (40, 0))
    again = client.post(reverse("billing:team_transfer", args=[team.pk]), {"amount": "40", "token": token},
                        follow=True)
    assert "already made" in again.content.decode()
    assert team_wallet_balance(team_id=team.pk) == (40, 0)


@pytest.mark.parametrize("amount,message", [
    ("0", "Move at least 1 credit."), ("-5", "Move at least 1 credit."), ("abc", "Enter a whole number"),
    ("", "This field is required."), ("1" * 5000, "Enter a whole number"),
    ("1" * 30, "Ensure this value is less than or equal to 100000000."),
    ("12\x00", "Enter a whole number"), ("²", "Enter a whole number"),
    ("61", "You have only 60 credits available to move."),
])
def test_bad_transfers_answer_400_with_the_reason(client, people, team, amount, message):
    give(people["owner"], 60)
    client.force_login(people["owner"])
    response = client.post(reverse("billing:team_transfer", args=[team.pk]),
                           {"amount": amount, "token": str(uuid.uuid4())})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert (wallet_balance(user=people["owner"]), team_wallet_balance(team_id=team.pk)) == ((60, 0), (0, 0))


@pytest.mark.parametrize("who", ["member", "viewer"])
def test_members_and_viewers_may_not_act(client, people, team, who, settings):
    settings.STUDIO_BILLING_TEST_PURCHASES = True
    pack = CreditPack.objects.create(name="P", credits=10, price_cents=100)
    give(people[who], 50)
    client.force_login(people[who])
    for url, data in [
        (reverse("billing:team_transfer", args=[team.pk]), {"amount": "5", "token": str(uuid.uuid4())}),
        (reverse("billing:team_member_cap", args=[team.pk, people[who].pk]), {f"cap-{people[who].pk}-monthly_credits": "999"}),
        (reverse("billing:team_test_purchase", args=[team.pk, pack.pk]), {}),
    ]:
        assert client.post(url, data).status_code == 403, url
    assert team_wallet_balance(team_id=team.pk) == (0, 0) and not MemberCap.objects.exists()


def test_cap_editor_sets_clears_and_refuses_bad_values(client, people, team):
    client.force_login(people["admin"])
    member = people["member"]
    url = reverse("billing:team_member_cap", args=[team.pk, member.pk])
    field = f"cap-{member.pk}-monthly_credits"
    assert client.post(url, {field: "25"}).status_code == 302
    assert MemberCap.objects.get(user=member).monthly_credits == 25
    for bad, message in [("-1", "A limit cannot be negative."), ("x", "Enter a whole number"),
                         ("9" * 400, "less than or equal to")]:
        response = client.post(url, {field: bad})
        assert response.status_code == 400 and message in response.content.decode(), bad
    assert MemberCap.objects.get(user=member).monthly_credits == 25
    assert client.post(url, {"clear": "1"}).status_code == 302
    assert not MemberCap.objects.exists()
    # Not a member of this team, or no such user at all: 404.
    for user_id in (people["other"].pk, 10**30):
        assert client.post(f"/billing/teams/{team.pk}/members/{user_id}/cap/", {field: "5"}).status_code == 404


def test_test_purchase_through_the_page(client, people, team, settings):
    pack = CreditPack.objects.create(name="P", credits=700, price_cents=100)
    client.force_login(people["owner"])
    url = reverse("billing:team_test_purchase", args=[team.pk, pack.pk])
    assert client.post(url).status_code == 404  # test purchases off
    settings.STUDIO_BILLING_TEST_PURCHASES = True
    assert client.post(url).status_code == 302
    assert team_wallet_balance(team_id=team.pk) == (700, 0)


def test_checkout_through_the_page_goes_to_stripe_for_the_team(client, people, team, settings, monkeypatch):
    import stripe

    settings.STRIPE_SECRET_KEY, settings.STRIPE_WEBHOOK_SECRET = "sk_test_x", "whsec_x"
    calls = []
    monkeypatch.setattr(stripe.checkout.Session, "create",
                        lambda **kw: calls.append(kw) or {"id": "cs_test_p", "url": "https://checkout.stripe.com/p"})
    pack = CreditPack.objects.create(name="P", credits=700, price_cents=100)
    client.force_login(people["admin"])
    response = client.post(reverse("billing:team_checkout", args=[team.pk, pack.pk]))
    assert response.status_code == 302 and response.url == "https://checkout.stripe.com/p"
    assert Payment.objects.get().wallet.owner_team_id == team.pk
    assert calls[0]["cancel_url"].endswith(page(team))


def test_history_pages_as_an_htmx_partial(client, people, team):
    fund_team(team, people["owner"], 100)
    client.force_login(people["owner"])
    response = client.get(page(team), {"page": "1"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Transfer in" in html and "<h1>" not in html


# --- the rest of billing with team wallets ---------------------------------------------------------


def test_team_wallet_changes_push_nothing_and_do_not_break(people, team, monkeypatch,
                                                          django_capture_on_commit_callbacks):
    sent = []

    class Layer:
        async def group_send(self, group, message):
            sent.append(group)

    monkeypatch.setattr(realtime, "get_channel_layer", lambda alias="default": Layer())
    give(people["owner"], 50)
    with django_capture_on_commit_callbacks(execute=True):
        transfer(people["owner"], team, 20)
    realtime.send_loop.flush()  # sends leave without waiting
    assert sent == [f"wallet.user.{people['owner'].pk}"]  # the owner's header; the team wallet has no header
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        reserve_for_team(people["member"], team, 5)
    realtime.send_loop.flush()
    assert sent == []


def test_billing_check_covers_team_wallets(people, team, capsys):
    fund_team(team, people["owner"], 50)
    job = reserve_for_team(people["member"], team, 5)  # a hold with no live job behind it: stale
    with pytest.raises(CommandError):
        call_command("billing_check")
    assert f"(team {team.pk}): 5 credits held for {job.subject}" in capsys.readouterr().err
    credits_capture(subject=job.subject, amount=5)
    call_command("billing_check")
    assert "All wallets balance" in capsys.readouterr().out
    wallet = Wallet.objects.get(owner_team=team)
    Wallet.objects.filter(pk=wallet.pk).update(available=999)
    with pytest.raises(CommandError):
        call_command("billing_check")
    assert f"wallet {wallet.pk} (team {team.pk}): cached 999/0, ledger 45/0" in capsys.readouterr().err


def test_staff_refund_of_a_team_job_and_the_staff_team_page(client, people, team, staff):
    fund_team(team, people["owner"], 50)
    job = reserve_for_team(people["member"], team, 8)
    credits_capture(subject=job.subject, amount=8)
    client.force_login(staff)
    response = client.post(reverse("billing:staff_refund"), {"subject": job.subject, "reason": "broken"})
    assert response.status_code == 302 and response.url == reverse("billing:staff_team", args=[team.pk])
    assert team_wallet_balance(team_id=team.pk) == (50, 0)
    html = client.get(response.url).content.decode()
    assert "Acme" in html and "Refund" in html and "member@example.com" in html
    client.force_login(people["owner"])
    assert client.get(response.url).status_code == 302  # staff only


def test_admin_lists_team_wallets_and_searches_the_ledger(admin_client, people, team):
    fund_team(team, people["owner"], 50)
    response = admin_client.get(reverse("admin:billing_wallet_changelist"))
    assert response.status_code == 200 and "Acme" in response.content.decode()
    response = admin_client.get(reverse("admin:billing_ledgerentry_changelist"), {"q": "transfer"})
    assert response.status_code == 200 and "transfer" in response.content.decode()
    wallet = Wallet.objects.get(owner_team=team)
    assert admin_client.get(reverse("admin:billing_wallet_change", args=[wallet.pk])).status_code == 200


def test_a_member_removed_from_the_team_cannot_bill_or_see_it(client, people, team):
    """The role is read on every request: a removed member's next request is a 404."""
    client.force_login(people["member"])
    assert client.get(page(team)).status_code == 200
    Membership.objects.filter(team=team, user=people["member"]).delete()
    assert client.get(page(team)).status_code == 404


def test_the_team_page_runs_the_same_queries_however_much_history(client, people, team, make_user):
    client.force_login(people["owner"])
    fund_team(team, people["owner"], 10_000)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(page(team)).status_code == 200
        return len(captured)

    reserve_for_team(people["member"], team, 3)
    few = queries()
    for _ in range(4):
        extra = make_user()
        Membership.objects.create(team=team, user=extra, role=TeamRole.MEMBER)
        member_cap_set(actor=people["owner"], team=team, member=extra, monthly_credits=100)
        for amount in (1, 2, 3):
            job = reserve_for_team(extra, team, amount)
            credits_capture(subject=job.subject, amount=amount)
    assert queries() == few
