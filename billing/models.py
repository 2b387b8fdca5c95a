"""Credits: wallets, an append-only ledger, prices, packs and payments.

These classes hold data and constraints only. Every change to a wallet or the ledger goes
through `billing.services`; reads go through `billing.selectors`. See docs/billing.md.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q


class Wallet(models.Model):
    """Cached balances; they always equal the sums of the wallet's ledger entries.

    A wallet belongs to exactly one owner: a user or a team (`wallet_has_exactly_one_owner`).
    """

    owner_user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,  # money history outlives nothing: deactivate users, don't delete
        related_name="wallet",
    )
    owner_team = models.OneToOneField(
        "accounts.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="wallet"
    )
    available = models.BigIntegerField(default=0, help_text="Credits that can be spent now.")
    held = models.BigIntegerField(default=0, help_text="Credits reserved for queued or running jobs.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(available__gte=0), name="wallet_available_not_negative"),
            models.CheckConstraint(condition=Q(held__gte=0), name="wallet_held_not_negative"),
            models.CheckConstraint(
                condition=Q(owner_user__isnull=False, owner_team__isnull=True)
                | Q(owner_user__isnull=True, owner_team__isnull=False),
                name="wallet_has_exactly_one_owner",
            ),
        ]

    def __str__(self) -> str:
        if self.owner_team_id:
            return f"Wallet of team {self.owner_team}"
        return f"Wallet of {self.owner_user}" if self.owner_user_id else f"Wallet {self.pk}"


class EntryKind(models.TextChoices):
    GRANT = "grant", "Free credits"
    PURCHASE = "purchase", "Purchase"
    RESERVE = "reserve", "Reserved"
    CAPTURE = "capture", "Spent"
    RELEASE = "release", "Released"
    REFUND = "refund", "Refund"
    ADJUST = "adjust", "Adjustment"
    TRANSFER_IN = "transfer_in", "Transfer in"
    TRANSFER_OUT = "transfer_out", "Transfer out"


class LedgerEntryQuerySet(models.QuerySet):
    def update(self, **kwargs):  # noqa: D102
        raise TypeError("The ledger is append-only: entries are never updated.")

    def delete(self):  # noqa: D102
        raise TypeError("The ledger is append-only: entries are never deleted.")


class LedgerEntry(models.Model):
    """One movement of credits. Never updated, never deleted.

    `amount` is the size of the movement (>= 0); `available_delta` and `held_delta` are its
    signed effect on the wallet's two balances, tied to `kind` by a CHECK constraint:

    grant, purchase, refund: available +amount
    reserve:                 available -amount, held +amount
    capture:                 held -amount (spent)
    release:                 held -amount, available +amount
    adjust:                  available +/-amount (admin grant or revoke)
    transfer_out, transfer_in: available -amount on one wallet, +amount on the other, one
                             transaction, keys `transfer:<id>:out` / `transfer:<id>:in`

    Holds (reserve, capture, release) and refunds name their `subject`: an opaque string chosen by
    whoever spends (generation uses `job:<uuid>`), so billing needs no table of any spender.
    """

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    amount = models.BigIntegerField()
    available_delta = models.BigIntegerField()
    held_delta = models.BigIntegerField()
    available_after = models.BigIntegerField(help_text="The wallet's available balance after this entry.")
    held_after = models.BigIntegerField(help_text="The wallet's held balance after this entry.")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who caused this entry (staff for adjustments; empty for the system).",
    )
    reason = models.CharField(max_length=500, blank=True)
    subject = models.CharField(
        max_length=200,
        blank=True,
        db_index=True,
        help_text="What a hold is for, as its spender names it (e.g. job:<uuid>); billing knows no spender.",
    )
    spender = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="On a team wallet's holds: the member who spent (per-member caps and usage).",
    )
    payment = models.ForeignKey(
        "billing.Payment", null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_entries"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="On holds: the API key the credits were spent through (per-key caps and usage).",
    )
    idempotency_key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = LedgerEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["wallet", "-created_at"], name="ledger_wallet_recent_idx"),
            models.Index(fields=["kind", "created_at"], name="ledger_kind_day_idx"),
            models.Index(fields=["wallet", "spender", "created_at"], name="ledger_member_usage_idx"),
            models.Index(fields=["api_key", "kind", "created_at"], name="ledger_api_key_usage_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="ledger_amount_not_negative"),
            models.CheckConstraint(
                condition=(
                    Q(kind__in=["grant", "purchase", "refund", "transfer_in"], available_delta=F("amount"), held_delta=0)
                    | Q(kind="transfer_out", available_delta=-F("amount"), held_delta=0)
                    | Q(kind="reserve", available_delta=-F("amount"), held_delta=F("amount"))
                    | Q(kind="capture", available_delta=0, held_delta=-F("amount"))
                    | Q(kind="release", available_delta=F("amount"), held_delta=-F("amount"))
                    | (
                        Q(kind="adjust", held_delta=0)
                        & (Q(available_delta=F("amount")) | Q(available_delta=-F("amount")))
                    )
                ),
                name="ledger_deltas_match_kind",
            ),
            models.CheckConstraint(
                condition=Q(available_after__gte=0, held_after__gte=0), name="ledger_after_not_negative"
            ),
            # One reserve, one capture, one release and one refund per subject, whatever the key says.
            models.UniqueConstraint(
                fields=["subject", "kind"],
                condition=Q(kind__in=["reserve", "capture", "release", "refund"]) & ~Q(subject=""),
                name="ledger_one_hold_entry_per_subject_and_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.available_delta:+d}/{self.held_delta:+d} ({self.idempotency_key})"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("The ledger is append-only: entries are never updated.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("The ledger is append-only: entries are never deleted.")


class MemberCap(models.Model):
    """An optional monthly limit on what one member may spend from a team's wallet (calendar
    month, UTC), enforced when credits are reserved."""

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="member_caps")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    monthly_credits = models.PositiveIntegerField()
    set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="member_cap_one_per_member"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team}: {self.monthly_credits}/month"


class PriceSettings(models.Model):
    """Admin-editable prices (one row, pk=1).

    A job costs ceil(reference_credits * multiplier * (w*h*steps*images) / (ref_w*ref_h*ref_steps)).
    A training step counts as `training_step_cost` generation steps at its resolution, per image of
    its batch (times `training_text_encoder_multiplier` when the text encoder trains too).
    """

    reference_credits = models.PositiveIntegerField(
        default=4, help_text="Credits for one image at the reference size and steps."
    )
    reference_width = models.PositiveIntegerField(default=512, validators=[MinValueValidator(1)])
    reference_height = models.PositiveIntegerField(default=512, validators=[MinValueValidator(1)])
    reference_steps = models.PositiveIntegerField(default=30, validators=[MinValueValidator(1)])
    signup_credits = models.PositiveIntegerField(
        default=100, help_text="Free credits granted once per verified email address."
    )
    training_step_cost = models.DecimalField(
        max_digits=6, decimal_places=3, default=Decimal("3.000"), validators=[MinValueValidator(Decimal("0.001"))],
        help_text="Generation steps that one training step costs, at the same size (a forward and a backward "
                  "pass of the UNet, once per image of the batch).",
    )
    training_text_encoder_multiplier = models.DecimalField(
        max_digits=6, decimal_places=3, default=Decimal("1.250"), validators=[MinValueValidator(Decimal("1"))],
        help_text="A training that also trains the text encoder costs this much more per step.",
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "price settings"
        verbose_name_plural = "price settings"
        constraints = [
            models.CheckConstraint(condition=Q(pk=1), name="price_settings_singleton"),
            models.CheckConstraint(
                condition=Q(reference_width__gte=1, reference_height__gte=1, reference_steps__gte=1),
                name="price_settings_reference_positive",
            ),
        ]

    def __str__(self) -> str:
        return "Prices"

    @classmethod
    def load(cls) -> PriceSettings:
        """The saved settings, or unsaved defaults when the row is missing (never writes)."""
        return cls.objects.filter(pk=1).first() or cls(pk=1)


class ModelPrice(models.Model):
    """A per-model price multiplier, keyed by the model name the job records."""

    model_name = models.CharField(max_length=200, unique=True)
    multiplier = models.DecimalField(
        max_digits=7, decimal_places=3, default=Decimal("1.000"), validators=[MinValueValidator(0)]
    )

    class Meta:
        ordering = ["model_name"]
        constraints = [
            models.CheckConstraint(condition=Q(multiplier__gte=0), name="model_price_multiplier_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.model_name} x{self.multiplier}"


class CreditPack(models.Model):
    name = models.CharField(max_length=100)
    credits = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    price_cents = models.PositiveIntegerField(validators=[MinValueValidator(50)], help_text="Price in cents.")
    currency = models.CharField(max_length=3, default="usd")
    active = models.BooleanField(default=True)
    sort_order = models.IntegerField(default=0)

    class Meta:
        ordering = ["sort_order", "price_cents"]
        constraints = [
            models.CheckConstraint(condition=Q(credits__gte=1), name="credit_pack_credits_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name}: {self.credits} credits for {self.price_display}"

    @property
    def price_display(self) -> str:
        return format_money(self.price_cents, self.currency)


def format_money(cents: int, currency: str) -> str:
    symbol = {"usd": "$", "eur": "€", "gbp": "£"}.get(currency.lower())
    amount = f"{cents // 100:,}.{cents % 100:02d}"
    return f"{symbol}{amount}" if symbol else f"{amount} {currency.upper()}"


class PaymentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PAID = "paid", "Paid"
    EXPIRED = "expired", "Expired"


class PaymentProvider(models.TextChoices):
    STRIPE = "stripe", "Stripe"
    TEST = "test", "Test purchase (no money)"


class Payment(models.Model):
    """A purchase of a credit pack. Credits arrive only when the provider confirms payment."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payments")
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="payments")
    pack = models.ForeignKey(CreditPack, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    pack_name = models.CharField(max_length=100)
    credits = models.PositiveIntegerField()
    amount_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    provider = models.CharField(max_length=16, choices=PaymentProvider.choices)
    status = models.CharField(
        max_length=16, choices=PaymentStatus.choices, default=PaymentStatus.PENDING, db_index=True
    )
    stripe_checkout_session_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    stripe_payment_intent_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.pack_name} ({self.get_status_display()}) for {self.user}"

    @property
    def amount_display(self) -> str:
        return format_money(self.amount_cents, self.currency)


class StripeEvent(models.Model):
    """Every verified Stripe webhook event we processed, once: the id is the idempotency key.

    The row is inserted in the same transaction as whatever the event changes, so a replayed,
    redelivered or concurrent duplicate either finds it or fails on the primary key.
    """

    event_id = models.CharField(max_length=255, primary_key=True)
    type = models.CharField(max_length=100)
    livemode = models.BooleanField(default=False)
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="events")
    outcome = models.CharField(max_length=200, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.event_id} ({self.type})"
