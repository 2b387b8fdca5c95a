"""Reads: balances, holds, history, purchases, staff usage reports. Nothing here writes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, TruncDate, TruncMonth
from django.utils import timezone

from billing.models import CreditPack, EntryKind, LedgerEntry, MemberCap, Payment, Wallet
from billing.subjects import subject_live_ids_function, subject_split


def month_start(now: dt.datetime | None = None) -> dt.datetime:
    """The first instant of the current calendar month, UTC: member caps count from here."""
    now = now or timezone.now()
    return now.astimezone(dt.timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def member_used_this_month(*, wallet_id: int, user_id: int, now: dt.datetime | None = None) -> int:
    """Credits a member has committed from a team wallet this month: what they reserved since the
    month began, less what those same holds gave back (releases, refunds). Open holds count, so a
    member cannot queue past their cap."""
    since = month_start(now)
    reserves = LedgerEntry.objects.filter(
        wallet_id=wallet_id, spender_id=user_id, kind=EntryKind.RESERVE, created_at__gte=since
    )
    reserved = reserves.aggregate(total=Sum("amount"))["total"] or 0
    if not reserved:
        return 0
    returned = LedgerEntry.objects.filter(
        wallet_id=wallet_id, kind__in=[EntryKind.RELEASE, EntryKind.REFUND],
        subject__in=reserves.values("subject"),
    ).aggregate(total=Sum("amount"))["total"] or 0
    return reserved - returned


def wallet_for_user(*, user) -> Wallet | None:
    return Wallet.objects.filter(owner_user_id=user.pk).first()


def wallet_balance(*, user) -> tuple[int, int]:
    """(available, held) for a user; (0, 0) before their first credit."""
    row = Wallet.objects.filter(owner_user_id=user.pk).values_list("available", "held").first()
    return row if row is not None else (0, 0)


def wallet_totals_from_ledger(*, wallet_id: int) -> tuple[int, int]:
    """(available, held) recomputed from the entries: what the cached balances must equal."""
    sums = LedgerEntry.objects.filter(wallet_id=wallet_id).aggregate(a=Sum("available_delta"), h=Sum("held_delta"))
    return sums["a"] or 0, sums["h"] or 0


def wallets_out_of_balance() -> list[dict]:
    """Wallets whose cached balances differ from the sums of their entries (should be none)."""
    from django.db.models import F

    return list(
        Wallet.objects.annotate(
            ledger_available=Coalesce(Sum("entries__available_delta"), 0),
            ledger_held=Coalesce(Sum("entries__held_delta"), 0),
        )
        .exclude(available=F("ledger_available"), held=F("ledger_held"))
        .values("pk", "owner_user_id", "owner_team_id", "available", "held", "ledger_available", "ledger_held")
    )


def ledger_for_user(*, user) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(wallet__owner_user_id=user.pk).select_related("payment", "actor")


def open_holds(*, wallet_id: int | None = None) -> QuerySet[LedgerEntry]:
    """Reserve entries whose subject has neither been captured nor released yet (all wallets by default)."""
    settled = LedgerEntry.objects.filter(kind__in=[EntryKind.CAPTURE, EntryKind.RELEASE], subject=OuterRef("subject"))
    holds = LedgerEntry.objects.filter(kind=EntryKind.RESERVE).exclude(Exists(settled))
    if wallet_id is not None:
        holds = holds.filter(wallet_id=wallet_id)
    return holds.order_by("created_at", "id")


def open_holds_for_user(*, user) -> QuerySet[LedgerEntry]:
    wallet = wallet_for_user(user=user)
    return open_holds(wallet_id=wallet.pk) if wallet else LedgerEntry.objects.none()


def subject_has_open_hold(*, subject: str) -> bool:
    return open_holds().filter(subject=subject).exists()


def open_holds_stale() -> list[LedgerEntry]:
    """Open holds whose spender says the subject is over or gone (see billing.subjects).

    A hold of a kind with no `live_ids` function cannot be judged and is not reported.
    """
    holds = list(open_holds().select_related("wallet"))
    by_kind: dict[str, list[LedgerEntry]] = {}
    for hold in holds:
        by_kind.setdefault(subject_split(hold.subject)[0], []).append(hold)
    stale = []
    for kind, kind_holds in by_kind.items():
        live_ids = subject_live_ids_function(kind)
        if live_ids is None:
            continue
        live = live_ids([subject_split(hold.subject)[1] for hold in kind_holds])
        stale += [hold for hold in kind_holds if subject_split(hold.subject)[1] not in live]
    return stale


def wallet_owner_label(wallet: Wallet | dict) -> str:
    """`user 12` or `team <uuid>`: who a wallet belongs to, for staff output and checks."""
    get = wallet.get if isinstance(wallet, dict) else lambda name: getattr(wallet, name)
    return f"team {get('owner_team_id')}" if get("owner_team_id") else f"user {get('owner_user_id')}"


def subject_wallet(*, subject: str) -> Wallet | None:
    """The wallet (a user's or a team's) that holds or paid for a subject, or None."""
    entry = LedgerEntry.objects.filter(subject=subject, kind=EntryKind.RESERVE).select_related("wallet").first()
    return entry.wallet if entry else None


def subject_payer(*, subject: str):
    """The user whose own wallet holds or paid for a subject; None for none or a team's wallet."""
    entry = (
        LedgerEntry.objects.filter(subject=subject, kind=EntryKind.RESERVE).select_related("wallet__owner_user").first()
    )
    return entry.wallet.owner_user if entry else None


def subject_charge(*, subject: str) -> dict:
    """What a subject (a job) reserved, spent, released and had refunded (for its page and staff)."""
    rows = LedgerEntry.objects.filter(
        subject=subject, kind__in=[EntryKind.RESERVE, EntryKind.CAPTURE, EntryKind.RELEASE, EntryKind.REFUND]
    )
    charge = {"reserved": 0, "captured": 0, "released": 0, "refunded": 0}
    names = {"reserve": "reserved", "capture": "captured", "release": "released", "refund": "refunded"}
    for entry in rows:
        charge[names[entry.kind]] = entry.amount
    charge["on_hold"] = 0 if (charge["captured"] or charge["released"]) else charge["reserved"]
    charge["spent"] = charge["captured"] - charge["refunded"]
    return charge


def payments_for_user(*, user) -> QuerySet[Payment]:
    """What the user paid for: packs for themselves and for their teams (`wallet.owner_team`)."""
    return Payment.objects.filter(user_id=user.pk).select_related("wallet__owner_team")


def payments_for_wallet(*, wallet_id: int) -> QuerySet[Payment]:
    return Payment.objects.filter(wallet_id=wallet_id).select_related("user")


def packs_for_sale() -> QuerySet[CreditPack]:
    return CreditPack.objects.filter(active=True)


# --- staff ---------------------------------------------------------------------------------------


def users_search(*, query: str, limit: int = 50):
    User = get_user_model()
    qs = User.objects.all().order_by("email", "pk")
    query = query.strip()
    if query:
        fields = {f.name for f in User._meta.get_fields()}
        condition = Q(email__icontains=query) if "email" in fields else Q(pk__in=[])
        if "username" in fields:
            condition |= Q(username__icontains=query)
        if query.isascii() and query.isdigit() and len(query) <= 18:  # fits a BIGINT; "²" is not a digit here
            condition |= Q(pk=int(query))
        qs = qs.filter(condition)
    return qs.select_related("wallet")[:limit]


@dataclass(frozen=True)
class UsageDay:
    day: dt.date
    granted: int
    purchased: int
    spent: int


def usage_per_day(*, days: int = 30, today: dt.date | None = None) -> list[UsageDay]:
    """Credits granted (signup grants + net admin adjustments), purchased and spent (captured
    minus refunded) per UTC day, oldest first, one row per day including empty days."""
    today = today or timezone.now().date()
    start = today - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(start, dt.time.min, tzinfo=dt.timezone.utc)
    rows = (
        LedgerEntry.objects.filter(created_at__gte=since)
        .exclude(kind__in=[EntryKind.RESERVE, EntryKind.RELEASE])
        .annotate(day=TruncDate("created_at", tzinfo=dt.timezone.utc))
        .values("day", "kind")
        .annotate(total=Sum("available_delta"), held=Sum("held_delta"))
    )
    table: dict[dt.date, dict[str, int]] = {}
    for row in rows:
        bucket = table.setdefault(row["day"], {"granted": 0, "purchased": 0, "spent": 0})
        kind = row["kind"]
        if kind in (EntryKind.GRANT, EntryKind.ADJUST):
            bucket["granted"] += row["total"] or 0
        elif kind == EntryKind.PURCHASE:
            bucket["purchased"] += row["total"] or 0
        elif kind == EntryKind.CAPTURE:
            bucket["spent"] += -(row["held"] or 0)
        elif kind == EntryKind.REFUND:
            bucket["spent"] -= row["total"] or 0
    result = []
    for i in range(days):
        day = start + dt.timedelta(days=i)
        bucket = table.get(day, {"granted": 0, "purchased": 0, "spent": 0})
        result.append(UsageDay(day=day, **bucket))
    return result


def top_spenders(*, days: int = 30, limit: int = 10):
    """Users by credits captured in the last `days` days."""
    since = timezone.now() - dt.timedelta(days=days)
    return list(
        LedgerEntry.objects.filter(kind=EntryKind.CAPTURE, created_at__gte=since, wallet__owner_user__isnull=False)
        .values("wallet__owner_user_id", "wallet__owner_user__email")
        .annotate(spent=Sum("amount"))
        .order_by("-spent", "wallet__owner_user_id")[:limit]
    )


def ledger_for_export(*, user=None) -> QuerySet[LedgerEntry]:
    qs = LedgerEntry.objects.select_related("wallet", "actor").order_by("created_at", "id")
    if user is not None:
        qs = qs.filter(wallet__owner_user_id=user.pk)
    return qs


# --- team wallets --------------------------------------------------------------------------------


def wallet_for_team(*, team_id) -> Wallet | None:
    return Wallet.objects.filter(owner_team_id=team_id).first()


def team_wallet_balance(*, team_id) -> tuple[int, int]:
    """(available, held) of a team's wallet; (0, 0) before its first credit."""
    row = Wallet.objects.filter(owner_team_id=team_id).values_list("available", "held").first()
    return row if row is not None else (0, 0)


def team_wallet_history(*, team_id) -> QuerySet[LedgerEntry]:
    """A team wallet's entries, newest first, with who spent, who acted and what was bought."""
    return LedgerEntry.objects.filter(wallet__owner_team_id=team_id).select_related("payment", "actor", "spender")


def open_holds_for_team(*, team_id) -> QuerySet[LedgerEntry]:
    wallet = wallet_for_team(team_id=team_id)
    return open_holds(wallet_id=wallet.pk).select_related("spender") if wallet else LedgerEntry.objects.none()


def team_member_caps(*, team_id) -> dict[int, int]:
    """{user id: monthly credits} of the members who have a cap."""
    return dict(MemberCap.objects.filter(team_id=team_id).values_list("user_id", "monthly_credits"))


@dataclass(frozen=True)
class MemberMonthUsage:
    """What one member took from a team wallet in one calendar month (UTC), counted by the month
    each hold was reserved in, as the caps count it: `used` = `spent` + `on_hold`."""

    month: dt.date
    user_id: int
    email: str
    spent: int  # captured, less refunds
    on_hold: int  # reserved for work still queued or running
    cap: int | None  # the member's cap today (shown on the current month)

    @property
    def used(self) -> int:
        return self.spent + self.on_hold


def _settled_amount(kind: str):
    rows = LedgerEntry.objects.filter(kind=kind, subject=OuterRef("subject")).values("amount")[:1]
    return Coalesce(Subquery(rows), 0)


def team_usage_by_member_month(*, team_id, user_id: int | None = None, months: int = 12,
                               now: dt.datetime | None = None) -> list[MemberMonthUsage]:
    """Usage of a team wallet per member and month, newest month first, for the last `months`
    months (only `user_id`'s rows if given). One query: each reserve entry with its subject's
    capture, release and refund amounts (the per-subject unique index makes those lookups cheap),
    summed per month and spender."""
    since = month_start(now)
    for _ in range(months - 1):
        since = month_start(since - dt.timedelta(days=1))
    reserves = LedgerEntry.objects.filter(
        wallet__owner_team_id=team_id, kind=EntryKind.RESERVE, spender__isnull=False, created_at__gte=since
    )
    if user_id is not None:
        reserves = reserves.filter(spender_id=user_id)
    rows = (
        reserves.annotate(month=TruncMonth("created_at", tzinfo=dt.timezone.utc))
        .values("month", "spender_id", "spender__email")
        .annotate(
            reserved=Sum("amount"),
            captured=Sum(_settled_amount(EntryKind.CAPTURE)),
            released=Sum(_settled_amount(EntryKind.RELEASE)),
            refunded=Sum(_settled_amount(EntryKind.REFUND)),
        )
        .order_by("-month", "spender__email", "spender_id")
    )
    caps = team_member_caps(team_id=team_id)
    this_month = month_start(now).date()
    usage = []
    for row in rows:
        month = row["month"].date() if isinstance(row["month"], dt.datetime) else row["month"]
        usage.append(
            MemberMonthUsage(
                month=month,
                user_id=row["spender_id"],
                email=row["spender__email"],
                spent=row["captured"] - row["refunded"],
                on_hold=row["reserved"] - row["captured"] - row["released"],
                cap=caps.get(row["spender_id"]) if month == this_month else None,
            )
        )
    return usage


# --- API keys: what was spent through each key ---------------------------------------------------

def api_key_used_this_month(*, api_key_id: int, now: dt.datetime | None = None) -> int:
    """Credits committed through a key this month: what it reserved since the month began, less
    what those holds gave back (releases, refunds). Open holds count, so a key cannot queue past
    its cap."""
    reserves = LedgerEntry.objects.filter(api_key_id=api_key_id, kind=EntryKind.RESERVE, created_at__gte=month_start(now))
    reserved = reserves.aggregate(total=Sum("amount"))["total"] or 0
    if not reserved:
        return 0
    returned = LedgerEntry.objects.filter(
        kind__in=[EntryKind.RELEASE, EntryKind.REFUND], subject__in=reserves.values("subject")
    ).aggregate(total=Sum("amount"))["total"] or 0
    return reserved - returned


@dataclass(frozen=True)
class KeyUsageDay:
    day: dt.date
    charges: int  # holds captured that day
    spent: int  # credits captured that day, less refunds made that day


def api_key_usage_per_day(*, api_key_id: int, days: int = 30, today: dt.date | None = None) -> list[KeyUsageDay]:
    """Credits charged through a key per UTC day (captures less refunds), oldest first, one row per
    day including empty days."""
    today = today or timezone.now().date()
    start = today - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(start, dt.time.min, tzinfo=dt.timezone.utc)
    rows = (
        LedgerEntry.objects.filter(
            api_key_id=api_key_id, kind__in=[EntryKind.CAPTURE, EntryKind.REFUND], created_at__gte=since
        )
        .annotate(day=TruncDate("created_at", tzinfo=dt.timezone.utc))
        .values("day", "kind")
        .annotate(total=Sum("amount"), n=Count("id"))
    )
    table: dict[dt.date, list[int]] = {}
    for row in rows:
        bucket = table.setdefault(row["day"], [0, 0])
        if row["kind"] == EntryKind.CAPTURE:
            bucket[0] += row["n"]
            bucket[1] += row["total"] or 0
        else:
            bucket[1] -= row["total"] or 0
    return [
        KeyUsageDay(day=day, charges=table.get(day, [0, 0])[0], spent=table.get(day, [0, 0])[1])
        for day in (start + dt.timedelta(days=i) for i in range(days))
    ]


def api_keys_spent(*, api_key_ids, since: dt.datetime | None = None) -> dict[int, int]:
    """Credits charged through each key (captures less refunds), since `since` (default: this month)."""
    since = since or month_start()
    rows = (
        LedgerEntry.objects.filter(
            api_key_id__in=list(api_key_ids), kind__in=[EntryKind.CAPTURE, EntryKind.REFUND], created_at__gte=since
        )
        .values("api_key_id", "kind")
        .annotate(total=Sum("amount"))
    )
    spent: dict[int, int] = {}
    for row in rows:
        sign = 1 if row["kind"] == EntryKind.CAPTURE else -1
        spent[row["api_key_id"]] = spent.get(row["api_key_id"], 0) + sign * (row["total"] or 0)
    return spent
