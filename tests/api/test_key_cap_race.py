"""Many calls at once through one capped API key, from one small balance: the key's monthly cap and
the wallet's balance are never exceeded. Real threads, each with its own database connection,
released together by a barrier (PostgreSQL: 50; SQLite, WAL + IMMEDIATE: 12)."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
from django.db import connection, transaction

from accounts import services as accounts
from billing.models import LedgerEntry, Wallet
from billing.selectors import api_key_used_this_month
from billing.services import ApiKeyCapReached, InsufficientCredits, credits_reserve
from tests.api.conftest import fast_user
from tests.factories import give_credits

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database]
PRICE, CAP = 4, 10  # two holds fit under the cap, a third would make 12


def test_concurrent_spending_keeps_to_the_key_cap_and_the_balance():
    threads_count = 50 if connection.vendor == "postgresql" else 12
    capped_user, poor_user = fast_user(), fast_user()
    give_credits(capped_user, 1000)
    give_credits(poor_user, 3 * PRICE)  # three holds' worth, no cap
    capped, _ = accounts.api_key_create(actor=capped_user, name="capped", scopes=["generate"], monthly_credit_cap=CAP)
    poor, _ = accounts.api_key_create(actor=poor_user, name="poor", scopes=["generate"])
    tasks = [(capped_user, capped) if i % 2 else (poor_user, poor) for i in range(threads_count)]
    barrier = threading.Barrier(len(tasks))
    lock = threading.Lock()
    outcomes: list[tuple[str, str]] = []

    def work(user, key):
        try:
            barrier.wait(timeout=60)
            try:
                with transaction.atomic():
                    credits_reserve(user=user, subject=f"job:{uuid.uuid4()}", amount=PRICE, api_key=key)
                outcome = "ok"
            except ApiKeyCapReached:
                outcome = "cap"
            except InsufficientCredits:
                outcome = "insufficient"
            except Exception as exc:  # deadlocks, lock timeouts, constraint violations...
                outcome = f"error: {exc!r}"
            with lock:
                outcomes.append((key.name, outcome))
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=task) for task in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    counts = Counter(outcomes)
    assert [o for o in outcomes if o[1].startswith("error")] == []
    assert counts[("capped", "ok")] == CAP // PRICE and counts[("capped", "insufficient")] == 0
    assert counts[("capped", "cap")] == threads_count // 2 - CAP // PRICE
    assert counts[("poor", "ok")] == 3 and counts[("poor", "cap")] == 0
    assert api_key_used_this_month(api_key_id=capped.pk) == PRICE * (CAP // PRICE) <= CAP
    assert Wallet.objects.get(owner_user=poor_user).available == 0
    assert LedgerEntry.objects.filter(api_key=poor, kind="reserve").count() == 3
