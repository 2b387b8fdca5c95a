"""Fair share of the queue between accounts (docs/teams.md, "Fair share"): a team's wallet-paid
jobs are one account however many members submit them, a user's own jobs another, and a team's
queue_weight gives it that many turns for a user's one. Claims as a single worker makes them,
each job finished before the next claim."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import Team
from generation import services
from generation.models import Job, JobState
from tests.factories import give_credits, make_user
from tests.generation.test_teams import submit, team_with

pytestmark = [pytest.mark.django_db, pytest.mark.database]


def serve(count: int) -> list[Job]:
    """Claim and finish `count` jobs in turn, as one worker would; the jobs in the order run."""
    served = []
    for _ in range(count):
        lease = services.job_claim_next(worker_id="one-gpu")
        job = Job.objects.get(pk=lease.job_id)
        Job.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED)
        served.append(job)
    return served


def account(job: Job) -> str:
    return f"team:{job.team_id}" if job.billed_to_team else f"user:{job.user_id}"


def test_a_team_of_many_members_is_one_account_beside_a_user():
    team, owner, members = team_with("member", "member", credits=100)
    solo = make_user(credits=100)
    for member in (owner, *members):
        for _ in range(3):
            submit(member, team=team, bill_team=True)
    for _ in range(4):
        submit(solo)
    order = [account(job) for job in serve(8)]
    assert order.count(f"user:{solo.pk}") == 4  # one turn each, not one for every member's
    assert all(a != b for a, b in zip(order, order[1:]))  # they alternate


def test_a_team_of_weight_two_gets_two_turns_for_a_users_one():
    team, owner, _ = team_with(credits=200)
    Team.objects.filter(pk=team.pk).update(queue_weight=Decimal("2"))
    solo = make_user(credits=100)
    for _ in range(8):
        submit(owner, team=team, bill_team=True)
    for _ in range(8):
        submit(solo)
    order = [account(job) for job in serve(12)]
    assert order.count(f"team:{team.pk}") == 8 and order.count(f"user:{solo.pk}") == 4


def test_a_user_with_many_jobs_does_not_hold_up_another_users_one():
    busy, other = make_user(credits=100), make_user(credits=100)
    for _ in range(8):
        submit(busy)
    waiting = submit(other)
    assert waiting.pk in [job.pk for job in serve(2)]


def test_a_members_own_jobs_and_the_teams_are_separate_accounts():
    team, owner, _ = team_with(credits=100)
    give_credits(owner, 100)  # the team's wallet has the first 100
    for _ in range(3):
        submit(owner, team=team, bill_team=True)
        submit(owner)
    order = [account(job) for job in serve(6)]
    assert all(a != b for a, b in zip(order, order[1:]))
