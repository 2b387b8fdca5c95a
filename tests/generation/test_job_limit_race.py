"""The per-user active-job limit under concurrent submits (#8 item 14).

20 threads, each with its own connection, released together by a barrier, all submitting for one
user with enough credits for every one of them: exactly STUDIO_MAX_ACTIVE_JOBS_PER_USER are
accepted, the rest get TooManyActiveJobs, and the credits held equal what the accepted jobs cost.
PostgreSQL (CI's second pass); SQLite serialises writers anyway, and gets a smaller run.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from billing.models import Wallet
from billing.selectors import wallet_balance
from generation import services
from generation.models import Job
from tests.billing.support import assert_wallet_consistent
from tests.factories import job_params, make_user

LIMIT = 8


def submit_concurrently(user, *, threads: int) -> list[str]:
    barrier = threading.Barrier(threads)
    outcomes: list[str] = []
    lock = threading.Lock()

    def submit() -> None:
        try:
            barrier.wait(timeout=60)
            services.job_submit(user=user, **job_params())
            outcome = "accepted"
        except services.TooManyActiveJobs:
            outcome = "too many"
        except Exception as exc:  # deadlocks, serialization failures, lock timeouts...
            outcome = f"error: {exc!r}"
        finally:
            connection.close()
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=submit) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    return outcomes


def run_limit_race(settings, *, threads: int) -> None:
    settings.STUDIO_MAX_ACTIVE_JOBS_PER_USER = LIMIT
    user = make_user(credits=10_000)
    outcomes = submit_concurrently(user, threads=threads)
    assert [o for o in outcomes if o.startswith("error")] == []
    assert (outcomes.count("accepted"), outcomes.count("too many")) == (LIMIT, threads - LIMIT)
    jobs = Job.objects.filter(user=user)
    assert jobs.count() == LIMIT
    cost = sum(jobs.values_list("cost", flat=True))
    assert wallet_balance(user=user) == (10_000 - cost, cost)
    assert_wallet_consistent(Wallet.objects.get(owner_user=user).pk)


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_20_concurrent_submits_by_one_user_respect_the_limit_postgresql(settings):
    if connection.vendor != "postgresql":
        pytest.skip("20 concurrent connections need PostgreSQL (CI runs this with DATABASE_URL set)")
    run_limit_race(settings, threads=20)


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_concurrent_submits_by_one_user_respect_the_limit_sqlite(settings):
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
        pytest.skip("the SQLite variant needs a file database")
    run_limit_race(settings, threads=12)
