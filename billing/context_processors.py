"""`wallet_balance` and `wallet_held` for the header balance (billing/_balance.html)."""

from __future__ import annotations

from billing.selectors import wallet_balance


def wallet(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    available, held = wallet_balance(user=user)
    return {"wallet_balance": available, "wallet_held": held}
