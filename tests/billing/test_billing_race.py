"""Concurrent spending: many threads, each with its own connection, released together.

PostgreSQL: 50 threads against a wallet that holds exactly 10 jobs' worth. SQLite (WAL +
IMMEDIATE transactions): the same with fewer threads.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from billing.models import LedgerEntry, Wallet
from billing.services import InsufficientCredits, credits_capture, credits_release, credits_reserve
from tests.billing.support import assert_wallet_consistent, give, make_job

PRICE = 4


def run_race(user, *, threads: int, affordable: int) -> None:
    give(user, PRICE * affordable)
    wallet_id = Wallet.objects.get(owner_user=user).pk
    barrier = threading.Barrier(threads + 1)  # + the watcher
    done = threading.Event()
    outcomes: list[str] = []
    errors: list[str] = []
    negatives: list[tuple[int, int]] = []
    lock = threading.Lock()

    settle = threading.Barrier(threads)

    def spend(i: int) -> None:
        job = None
        try:
            barrier.wait(timeout=60)
            try:
                with transaction.atomic():  # as generation.services.job_submit does
                    job = make_job(user)
                    credits_reserve(user=job.user, subject=job.subject, amount=PRICE)
                outcome = "ok"
            except InsufficientCredits:
                job, outcome = None, "insufficient"
            except Exception as exc:  # deadlocks, lock timeouts, constraint violations...
                job, outcome = None, f"error: {exc!r}"
            with lock:
                outcomes.append(outcome)
            settle.wait(timeout=60)  # every reservation attempt is over before any hold is settled
            # Winners settle concurrently, each twice (a redelivered task): odd ones succeed, even fail.
            if job is not None:
                for _ in range(2):
                    if i % 2:
                        credits_capture(subject=job.subject, amount=PRICE)
                    else:
                        credits_release(subject=job.subject, reason="worker lost")
        except Exception as exc:
            with lock:
                errors.append(repr(exc))
        finally:
            connection.close()

    def watch() -> None:
        try:
            barrier.wait()
            while not done.is_set():
                row = Wallet.objects.filter(pk=wallet_id).values_list("available", "held").get()
                if row[0] < 0 or row[1] < 0:
                    negatives.append(row)
        finally:
            connection.close()

    workers = [threading.Thread(target=spend, args=(i,)) for i in range(threads)]
    watcher = threading.Thread(target=watch)
    for t in [*workers, watcher]:
        t.start()
    for t in workers:
        t.join(120)
    done.set()
    watcher.join(10)

    assert errors == []
    assert [o for o in outcomes if o.startswith("error")] == []
    assert outcomes.count("ok") == affordable
    assert outcomes.count("insufficient") == threads - affordable
    assert negatives == []
    assert_wallet_consistent(wallet_id)
    wallet = Wallet.objects.get(pk=wallet_id)
    assert wallet.held == 0
    entries = LedgerEntry.objects.filter(wallet_id=wallet_id)
    assert entries.filter(kind="reserve").count() == affordable
    captures = entries.filter(kind="capture").count()
    assert captures + entries.filter(kind="release").count() == affordable  # one settlement per job
    assert wallet.available == PRICE * (affordable - captures)


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_race_50_threads_postgresql(user):
    if connection.vendor != "postgresql":
        pytest.skip("50 concurrent connections need PostgreSQL (CI runs this with DATABASE_URL set)")
    run_race(user, threads=50, affordable=10)


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_race_sqlite(user):
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite variant")
    if connection.is_in_memory_db():
        pytest.skip("threads need a file database; run `pytest tests/billing` (its conftest uses one)")
    run_race(user, threads=12, affordable=4)
