"""Team members spending from one team wallet at once, with per-member monthly caps, while an
admin moves credits in: no cap and no balance is ever exceeded.

Real threads, each with its own database connection, released together by a barrier. Some
members have a cap of 10 credits (two 4-credit jobs; a third would make 12), the others none.
A watcher thread polls the committed balances and every capped member's use the whole time.
PostgreSQL: 50 threads (45 spenders, 5 transfers). SQLite (WAL + IMMEDIATE): 12.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
from django.db import connection, transaction

from accounts.models import TeamRole
from billing.models import LedgerEntry, Wallet
from billing.selectors import member_used_this_month
from billing.services import (
    InsufficientCredits,
    MemberCapReached,
    credits_capture,
    credits_release,
    credits_reserve,
    credits_transfer_to_team,
    member_cap_set,
    wallet_get_or_create_for_team,
)
from tests.billing.support import assert_wallet_consistent, fund_team, give, make_job, make_team

PRICE = 4
CAP = 10  # two jobs, not three


def run_team_race(make_user, *, capped: int, free: int, attempts: int, transfers: int, funded_jobs: int) -> None:
    owner = make_user()
    members = [make_user() for _ in range(capped + free)]
    team = make_team(owner, members={member: TeamRole.MEMBER for member in members})
    fund_team(team, owner, PRICE * funded_jobs)
    give(owner, PRICE * transfers)  # moved in during the race, PRICE at a time
    for member in members[:capped]:
        member_cap_set(actor=owner, team=team, member=member, monthly_credits=CAP)
    team_wallet_id = wallet_get_or_create_for_team(team=team).pk
    owner_wallet_id = Wallet.objects.get(owner_user=owner).pk

    tasks = [("spend", member) for member in members for _ in range(attempts)] + [("transfer", owner)] * transfers
    barrier = threading.Barrier(len(tasks) + 1)  # + the watcher
    settle = threading.Barrier(len(tasks))
    done = threading.Event()
    lock = threading.Lock()
    outcomes: list[tuple[str, int]] = []  # (outcome, user id)
    errors: list[str] = []
    violations: list[str] = []

    def work(i: int, task: str, user) -> None:
        job = None
        try:
            barrier.wait(timeout=60)
            try:
                if task == "transfer":
                    credits_transfer_to_team(user=user, team=team, amount=PRICE, idempotency_key=uuid.uuid4().hex)
                    outcome = "moved"
                else:
                    with transaction.atomic():  # as generation.services.job_submit does
                        job = make_job(user)
                        credits_reserve(user=user, subject=job.subject, amount=PRICE, team=team)
                    outcome = "ok"
            except MemberCapReached:
                job, outcome = None, "cap"
            except InsufficientCredits:
                job, outcome = None, "insufficient"
            except Exception as exc:  # deadlocks, lock timeouts, constraint violations...
                job, outcome = None, f"error: {exc!r}"
            with lock:
                outcomes.append((outcome, user.pk))
            settle.wait(timeout=120)  # every attempt is over before any hold is settled
            if job is not None:  # settled twice (a redelivered task): odd ones succeed, even fail
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
            barrier.wait(timeout=60)
            while not done.is_set():
                for wallet_id, available, held in Wallet.objects.filter(
                    pk__in=[team_wallet_id, owner_wallet_id]
                ).values_list("pk", "available", "held"):
                    if available < 0 or held < 0:
                        violations.append(f"wallet {wallet_id}: {available}/{held}")
                for member in members[:capped]:
                    used = member_used_this_month(wallet_id=team_wallet_id, user_id=member.pk)
                    if used > CAP:
                        violations.append(f"member {member.pk} used {used} > {CAP}")
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i, task, user)) for i, (task, user) in enumerate(tasks)]
    watcher = threading.Thread(target=watch)
    for thread in [*threads, watcher]:
        thread.start()
    for thread in threads:
        thread.join(180)
    done.set()
    watcher.join(30)

    assert errors == [] and violations == []
    assert [o for o, _ in outcomes if o.startswith("error")] == []
    counts = Counter(o for o, _ in outcomes)
    assert counts["moved"] == transfers
    # Credits ran out at some point (the members could have spent more), never below zero.
    assert funded_jobs <= counts["ok"] <= funded_jobs + transfers
    assert counts["ok"] + counts["cap"] + counts["insufficient"] == (capped + free) * attempts
    wins = Counter(user_id for o, user_id in outcomes if o == "ok")
    for member in members[:capped]:
        assert wins[member.pk] <= CAP // PRICE
        assert member_used_this_month(wallet_id=team_wallet_id, user_id=member.pk) <= CAP
    for member_id, outcome in [(u, o) for o, u in outcomes if o == "cap"]:
        assert member_id in {m.pk for m in members[:capped]}, outcome  # only capped members hit a cap

    for wallet_id in (team_wallet_id, owner_wallet_id):
        assert_wallet_consistent(wallet_id)
    team_wallet = Wallet.objects.get(pk=team_wallet_id)
    entries = LedgerEntry.objects.filter(wallet_id=team_wallet_id)
    captured = entries.filter(kind="capture").count()
    assert entries.filter(kind="reserve").count() == counts["ok"]
    assert captured + entries.filter(kind="release").count() == counts["ok"]  # one settlement per job
    assert (team_wallet.available, team_wallet.held) == (PRICE * (funded_jobs + transfers - captured), 0)
    assert Wallet.objects.get(pk=owner_wallet_id).available == 0
    assert entries.filter(kind="transfer_in").count() == transfers + 1  # + the funding


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(600)
def test_team_race_50_threads_postgresql(make_user):
    if connection.vendor != "postgresql":
        pytest.skip("50 concurrent connections need PostgreSQL (CI runs this with DATABASE_URL set)")
    run_team_race(make_user, capped=5, free=4, attempts=5, transfers=5, funded_jobs=20)


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(600)
def test_team_race_sqlite(make_user):
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
        pytest.skip("the SQLite variant needs a file database")
    run_team_race(make_user, capped=2, free=1, attempts=3, transfers=3, funded_jobs=3)
