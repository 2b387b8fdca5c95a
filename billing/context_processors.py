"""`wallet_balance` and `wallet_held` for the header balance (billing/_balance.html).

Both are lazy (templates call callables): a render that never shows the balance, such as most
htmx fragments, costs no query, and one that shows both costs one.
"""

from __future__ import annotations

from functools import cache

from billing.selectors import wallet_balance


def wallet(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}

    @cache
    def balances() -> tuple[int, int]:
        return wallet_balance(user=user)

    return {"wallet_balance": lambda: balances()[0], "wallet_held": lambda: balances()[1]}
