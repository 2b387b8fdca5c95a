"""A Hypothesis state machine against the real database and the real services.

Rules: signup grants, Stripe purchases through the signed webhook (including replayed events and
a second event for the same session), reservations, captures, releases, refunds, admin
adjustments, and redelivered tasks (capture/release called again). A plain-Python model predicts
every balance; after every step the invariants hold:

- the cached balances equal the sums of the wallet's entries, and are never negative;
- purchased + granted + adjustments + refunds = available + held + captured;
- at most one capture (and one settlement) per job, at most one purchase per payment,
  at most one StripeEvent per event id.

Team wallets: the user owns a team with two members; the user moves credits into the team's
wallet (a transfer_out and a transfer_in entry, idempotent by key), sets and clears per-member
monthly caps, and the members reserve from the team wallet. Then also:

- the team wallet's balances equal the model and its ledger sums, never negative;
- what left the user's wallet by transfers equals what arrived in the team's;
- user wallet: credited - transferred out = available + held + captured; team wallet:
  transferred in + refunds = available + held + captured;
- a reservation succeeds exactly when the model says so: within the member's cap and the team's
  balance; no member's use this month exceeds their cap (or what they had used when the cap was
  lowered below that: a lower cap stops new spending, it undoes nothing).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid

import pytest
import stripe
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.db.models import Count, Q, Sum
from hypothesis import HealthCheck, settings as hyp_settings, strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from billing.models import CreditPack, EntryKind, LedgerEntry, Payment, StripeEvent, Wallet
from accounts.models import Membership, Team, TeamRole
from billing.selectors import member_used_this_month, wallet_totals_from_ledger
from billing.services import (
    AlreadyRecorded,
    InsufficientCredits,
    MemberCapReached,
    credits_adjust,
    credits_capture,
    credits_grant_signup,
    credits_refund,
    credits_release,
    credits_reserve,
    credits_transfer_to_team,
    member_cap_clear,
    member_cap_set,
    stripe_webhook_receive,
    wallet_get_or_create_for_team,
    wallet_get_or_create_for_user,
)
from tests.billing.support import make_job

SECRET = "whsec_stateful"
_ids = itertools.count(1)


class LedgerMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")
    payments = Bundle("payments")
    deliveries = Bundle("deliveries")

    def __init__(self):
        super().__init__()
        n = next(_ids)
        User = get_user_model()
        self.user = User.objects.create_user(username=f"hyp{n}", email=f"hyp{n}@example.com", password="x")
        self.staff = User.objects.create_user(username=f"hyp-staff{n}", email=f"staff{n}@example.com", is_staff=True)
        self.wallet = wallet_get_or_create_for_user(user=self.user)
        self.pack = CreditPack.objects.create(name=f"Pack {n}", credits=100, price_cents=500)
        self.n = n
        # the model
        self.available = 0
        self.held = 0
        self.captured = 0
        self.credited_in = 0  # grants + purchases + adjustments + refunds
        self.open_holds: dict = {}  # job pk -> reserved
        self.charged: dict = {}  # job pk -> captured amount
        self.refunded: set = set()
        self.paid: set = set()
        self.seen_events: set = set()
        self.signup_granted = False
        self.granted_emails: set = set()
        # the team: self.user owns it, two members spend from its wallet
        self.team = Team.objects.create(name=f"Team {n}")
        Membership.objects.create(team=self.team, user=self.user, role=TeamRole.OWNER)
        self.members = [
            User.objects.create_user(username=f"hyp{n}-m{i}", email=f"m{i}-{n}@example.com", password="x")
            for i in range(2)
        ]
        for member in self.members:
            Membership.objects.create(team=self.team, user=member, role=TeamRole.MEMBER)
        self.team_wallet = wallet_get_or_create_for_team(team=self.team)
        self.team_available = 0
        self.team_held = 0
        self.team_captured = 0
        self.team_refunded_in = 0
        self.transferred = 0
        self.transfer_keys: list[str] = []
        self.team_holds: dict = {}  # job pk -> (member index, reserved)
        self.team_charged: dict = {}  # job pk -> (member index, captured)
        self.spender_of: dict = {}  # job pk -> member index, for any team reservation that succeeded
        self.used = [0, 0]  # per member: reserved - released - refunded this month
        self.caps: list = [None, None]
        self.used_when_capped = [0, 0]

    # --- grants -------------------------------------------------------------------------------

    @rule(which=st.sampled_from(["a", "b"]))
    def verify_email(self, which):
        email = f"{which}-{self.n}@Example.com"
        address, _ = EmailAddress.objects.get_or_create(user=self.user, email=email, defaults={"verified": True})
        result = credits_grant_signup(email_address=address)
        due = not self.signup_granted and email.lower() not in self.granted_emails
        assert (result is not None) == due
        if due:
            self.signup_granted = True
            self.granted_emails.add(email.lower())
            self.available += 100
            self.credited_in += 100

    @rule(amount=st.integers(-60, 60).filter(bool))
    def adjust(self, amount):
        try:
            credits_adjust(user=self.user, amount=amount, actor=self.staff, reason="hyp", idempotency_key=uuid.uuid4().hex)
        except InsufficientCredits:
            assert -amount > self.available
            return
        assert self.available + amount >= 0
        self.available += amount
        self.credited_in += amount

    # --- purchases through the webhook ------------------------------------------------------------

    @rule(target=payments)
    def start_checkout(self):
        return Payment.objects.create(
            user=self.user, wallet=self.wallet, pack=self.pack, pack_name=self.pack.name, credits=100,
            amount_cents=500, currency="usd", provider="stripe", stripe_checkout_session_id=f"cs_{uuid.uuid4().hex}",
        )

    @rule(target=deliveries, payment=payments,
          type=st.sampled_from(["checkout.session.completed", "checkout.session.async_payment_succeeded",
                                "checkout.session.expired"]))
    def stripe_sends(self, payment, type):
        body = json.dumps({
            "id": f"evt_{uuid.uuid4().hex}", "type": type, "livemode": False,
            "data": {"object": {
                "id": payment.stripe_checkout_session_id, "metadata": {"payment_id": str(payment.pk)},
                "payment_status": "unpaid" if type.endswith("expired") else "paid",
                "amount_total": 500, "currency": "usd",
            }},
        })
        self._deliver(payment, body, type)
        return (payment, body, type)

    @rule(delivery=deliveries)
    def stripe_redelivers(self, delivery):
        self._deliver(*delivery)

    @rule(delivery=deliveries)
    def forged_delivery(self, delivery):
        payment, body, _ = delivery
        from billing.services import WebhookRejected

        header = stripe.WebhookSignature.generate_signature_header(body, "whsec_wrong")
        with pytest.raises(WebhookRejected):
            stripe_webhook_receive(payload=body.encode(), signature=header)

    def _deliver(self, payment, body, type):
        header = stripe.WebhookSignature.generate_signature_header(body, SECRET, timestamp=int(time.time()))
        outcome = stripe_webhook_receive(payload=body.encode(), signature=header)
        event_id = json.loads(body)["id"]
        if event_id in self.seen_events:
            assert outcome == "duplicate"
            return
        self.seen_events.add(event_id)
        if type != "checkout.session.expired" and payment.pk not in self.paid:
            assert outcome == "paid"
            self.paid.add(payment.pk)
            self.available += 100
            self.credited_in += 100

    # --- jobs -------------------------------------------------------------------------------------

    @rule(target=jobs, amount=st.integers(0, 40))
    def submit_job(self, amount):
        job = make_job(self.user)
        try:
            credits_reserve(user=job.user, subject=job.subject, amount=amount)
        except InsufficientCredits:
            assert amount > self.available
            return job  # a job with no hold (in real life it would not exist); its settlement is a no-op
        assert amount <= self.available
        if amount:
            self.available -= amount
            self.held += amount
            self.open_holds[job.pk] = amount
        return job

    @rule(job=jobs, share=st.fractions(0, 1))
    def job_succeeds(self, job, share):
        if job.pk in self.team_holds:
            member, reserved = self.team_holds.pop(job.pk)
            amount = int(reserved * share)
            credits_capture(subject=job.subject, amount=amount)
            self.team_held -= reserved
            self.team_available += reserved - amount
            self.team_captured += amount
            self.used[member] -= reserved - amount
            self.team_charged[job.pk] = (member, amount)
            return
        reserved = self.open_holds.get(job.pk)
        amount = int(reserved * share) if reserved else 0
        credits_capture(subject=job.subject, amount=amount)
        if reserved is not None:
            del self.open_holds[job.pk]
            self.held -= reserved
            self.available += reserved - amount
            self.captured += amount
            self.charged[job.pk] = amount

    @rule(job=jobs)
    def job_fails(self, job):
        credits_release(subject=job.subject, reason="failed")
        if job.pk in self.team_holds:
            member, reserved = self.team_holds.pop(job.pk)
            self.team_held -= reserved
            self.team_available += reserved
            self.used[member] -= reserved
            return
        reserved = self.open_holds.pop(job.pk, None)
        if reserved is not None:
            self.held -= reserved
            self.available += reserved

    @rule(job=jobs)
    def task_redelivered(self, job):
        """A redelivered task settles again: capture and release are no-ops once settled."""
        if job.pk in self.open_holds or job.pk in self.team_holds:
            return
        credits_capture(subject=job.subject, amount=0)
        credits_release(subject=job.subject, reason="redelivered")

    @rule(job=jobs)
    def staff_refunds(self, job):
        try:
            credits_refund(subject=job.subject, actor=self.staff, reason="hyp refund")
        except (ValueError, AlreadyRecorded):
            charged = self.charged.get(job.pk) or self.team_charged.get(job.pk, (0, 0))[1]
            assert not charged or job.pk in self.refunded
            return
        assert job.pk not in self.refunded
        if job.pk in self.team_charged:
            member, amount = self.team_charged[job.pk]
            assert amount
            self.refunded.add(job.pk)
            self.team_available += amount
            self.team_refunded_in += amount
            self.used[member] -= amount
            return
        amount = self.charged[job.pk]
        assert amount and job.pk not in self.refunded
        self.refunded.add(job.pk)
        self.available += amount
        self.credited_in += amount

    # --- team wallets -----------------------------------------------------------------------------

    @rule(amount=st.integers(1, 80), replay=st.booleans())
    def transfer_to_team(self, amount, replay):
        key = uuid.uuid4().hex
        try:
            credits_transfer_to_team(user=self.user, team=self.team, amount=amount, idempotency_key=key)
        except InsufficientCredits:
            assert amount > self.available
            return
        assert amount <= self.available
        self.available -= amount
        self.team_available += amount
        self.transferred += amount
        self.transfer_keys.append(key)
        if replay:  # a double-submitted form moves the credits once
            with pytest.raises(AlreadyRecorded):
                credits_transfer_to_team(user=self.user, team=self.team, amount=amount, idempotency_key=key)

    @rule(member=st.integers(0, 1), cap=st.none() | st.integers(0, 60))
    def set_member_cap(self, member, cap):
        if cap is None:
            member_cap_clear(actor=self.user, team=self.team, member=self.members[member])
        else:
            member_cap_set(actor=self.user, team=self.team, member=self.members[member], monthly_credits=cap)
            self.used_when_capped[member] = self.used[member]
        self.caps[member] = cap

    @rule(target=jobs, member=st.integers(0, 1), amount=st.integers(0, 40))
    def member_submits_to_team(self, member, amount):
        job = make_job(self.members[member])
        cap = self.caps[member]
        over_cap = amount > 0 and cap is not None and self.used[member] + amount > cap
        try:
            credits_reserve(user=job.user, subject=job.subject, amount=amount, team=self.team)
        except MemberCapReached:
            assert over_cap
            return job
        except InsufficientCredits:
            assert not over_cap and amount > self.team_available
            return job
        assert not over_cap and amount <= self.team_available
        if amount:
            self.team_available -= amount
            self.team_held += amount
            self.used[member] += amount
            self.team_holds[job.pk] = (member, amount)
        return job

    # --- invariants --------------------------------------------------------------------------------

    @invariant()
    def team_wallet_matches_the_model_and_the_ledger(self):
        wallet = Wallet.objects.get(pk=self.team_wallet.pk)
        assert (wallet.available, wallet.held) == (self.team_available, self.team_held)
        assert (wallet.available, wallet.held) == wallet_totals_from_ledger(wallet_id=wallet.pk)
        assert wallet.available >= 0 and wallet.held >= 0
        totals = dict(
            LedgerEntry.objects.filter(wallet_id__in=[wallet.pk, self.wallet.pk])
            .values_list("wallet_id", "kind").annotate(total=Sum("amount")).order_by()
            .values_list("kind", "total").filter(
                Q(wallet_id=wallet.pk, kind__in=[EntryKind.TRANSFER_IN, EntryKind.CAPTURE, EntryKind.REFUND])
                | Q(wallet_id=self.wallet.pk, kind=EntryKind.TRANSFER_OUT)
            )
        )
        transferred_in, captured, refunded = (totals.get(k, 0) for k in ("transfer_in", "capture", "refund"))
        assert transferred_in == totals.get("transfer_out", 0) == self.transferred
        assert (captured, refunded) == (self.team_captured, self.team_refunded_in)
        assert transferred_in + refunded == wallet.available + wallet.held + captured

    @invariant()
    def no_member_exceeds_their_cap(self):
        for i, member in enumerate(self.members):
            used = member_used_this_month(wallet_id=self.team_wallet.pk, user_id=member.pk)
            assert used == self.used[i]
            if self.caps[i] is not None:
                assert used <= max(self.caps[i], self.used_when_capped[i])

    @invariant()
    def balances_match_the_model_and_the_ledger(self):
        wallet = Wallet.objects.get(pk=self.wallet.pk)
        assert (wallet.available, wallet.held) == (self.available, self.held)
        assert (wallet.available, wallet.held) == wallet_totals_from_ledger(wallet_id=wallet.pk)
        assert wallet.available >= 0 and wallet.held >= 0

    @invariant()
    def money_is_conserved(self):
        entries = LedgerEntry.objects.filter(wallet_id=self.wallet.pk)
        by_kind = dict(entries.values_list("kind").annotate(total=Sum("available_delta")).order_by())
        captured = -(entries.filter(kind=EntryKind.CAPTURE).aggregate(t=Sum("held_delta"))["t"] or 0)
        credited = sum(by_kind.get(k, 0) for k in (EntryKind.GRANT, EntryKind.PURCHASE, EntryKind.ADJUST, EntryKind.REFUND))
        wallet = Wallet.objects.get(pk=self.wallet.pk)
        assert credited + by_kind.get(EntryKind.TRANSFER_OUT, 0) == wallet.available + wallet.held + captured
        assert by_kind.get(EntryKind.TRANSFER_OUT, 0) == -self.transferred
        assert captured == self.captured and credited == self.credited_in

    @invariant()
    def at_most_one_of_each(self):
        entries = LedgerEntry.objects.filter(wallet_id=self.wallet.pk)
        per_job = entries.filter(kind__in=["capture", "release"]).exclude(subject="").values("subject", "kind").annotate(n=Count("id"))
        assert all(row["n"] == 1 for row in per_job)
        purchases = entries.filter(kind="purchase").values("payment_id").annotate(n=Count("id"))
        assert all(row["n"] == 1 for row in purchases)
        assert entries.filter(kind="purchase").count() == len(self.paid)
        assert StripeEvent.objects.filter(payment__wallet_id=self.wallet.pk).count() == len(self.seen_events)


@pytest.mark.database
@pytest.mark.django_db
@pytest.mark.timeout(900)  # every step checks every invariant against the database; a busy CI machine is slow
def test_ledger_state_machine(settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS = 300
    run_state_machine_as_test(
        LedgerMachine,
        settings=hyp_settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
