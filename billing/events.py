"""Real-time wallet events: after a change commits, push the new header balance to its owner.

Zulip style: services call `wallet_changed_on_commit`; nothing is sent if the transaction rolls
back, and a broken channel layer never breaks a money movement (robust on_commit).
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.template.loader import render_to_string

from accounts.realtime import send_loop

logger = logging.getLogger(__name__)


def wallet_group_name(user_id: int) -> str:
    return f"wallet.user.{user_id}"


def wallet_changed_on_commit(*, wallet_id: int) -> None:
    transaction.on_commit(lambda: send_wallet_update(wallet_id=wallet_id), robust=True)


def render_balance(*, available: int, held: int, oob: bool = False) -> str:
    return render_to_string(
        "billing/_balance.html", {"wallet_balance": available, "wallet_held": held, "oob": oob}
    )


def send_wallet_update(*, wallet_id: int) -> None:
    from billing.models import Wallet

    wallet = Wallet.objects.filter(pk=wallet_id).values("owner_user_id", "available", "held").first()
    if wallet is None or wallet["owner_user_id"] is None:
        return
    html = render_balance(available=wallet["available"], held=wallet["held"], oob=True)
    def failed(error: Exception) -> None:  # the page shows the balance from the database on its next load
        logger.warning("Could not push wallet %s's balance (%s: %s)", wallet_id, type(error).__name__, error)

    # The process's long-lived send loop, without waiting (one Redis round trip, in order).
    send_loop.send(wallet_group_name(wallet["owner_user_id"]), {"type": "wallet.update", "html": html},
                   on_error=failed)
