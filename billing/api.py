"""The API's money endpoints: the balance a key spends from, and what it spent (studio/api.py mounts them)."""

from __future__ import annotations

import datetime as dt

from ninja import Field, Query, Router, Schema

from accounts.api import api_key_of, problems
from billing.selectors import api_key_usage_per_day, api_key_used_this_month, team_wallet_balance, wallet_balance

router = Router(tags=["credits"])


class KeyAllowanceOut(Schema):
    monthly_credit_cap: int | None = Field(description="The key's monthly cap (calendar month, UTC); null: none.")
    used_this_month: int = Field(description="Credits committed through the key this month, open holds included.")
    left_this_month: int | None = Field(description="What the cap still allows this month; null without a cap.")


class BalanceOut(Schema):
    wallet: str = Field(description="Whose credits the key spends: 'user' or 'team'.")
    available: int = Field(description="Credits that can be spent now.")
    held: int = Field(description="Credits reserved for queued or running jobs.")
    key: KeyAllowanceOut


@router.get("/balance", response={200: BalanceOut, **problems()}, summary="Credits left, and the key's cap")
def balance(request):
    key = api_key_of(request)
    if key.owner_team_id is not None:
        available, held = team_wallet_balance(team_id=key.owner_team_id)
    else:
        available, held = wallet_balance(user=key.owner_user)
    used = api_key_used_this_month(api_key_id=key.pk)
    cap = key.monthly_credit_cap
    return BalanceOut(
        wallet="team" if key.owner_team_id is not None else "user",
        available=available,
        held=held,
        key=KeyAllowanceOut(
            monthly_credit_cap=cap, used_this_month=used, left_this_month=None if cap is None else max(cap - used, 0)
        ),
    )


class UsageQuery(Schema):
    days: int = Field(30, ge=1, le=366, description="How many days back, today included.")


class UsageDayOut(Schema):
    day: dt.date
    charges: int = Field(description="Holds captured that day (finished jobs).")
    credits: int = Field(description="Credits charged that day, less refunds.")


class UsageOut(Schema):
    days: list[UsageDayOut]
    total: int


@router.get("/usage", response={200: UsageOut, **problems(422)}, summary="Credits charged through this key per day")
def usage(request, query: Query[UsageQuery]):
    key = api_key_of(request)
    rows = api_key_usage_per_day(api_key_id=key.pk, days=query.days)
    return UsageOut(
        days=[UsageDayOut(day=row.day, charges=row.charges, credits=row.spent) for row in rows],
        total=sum(row.spent for row in rows),
    )
