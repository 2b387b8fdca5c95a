"""Team changes whose effects cross apps: a new team gets its wallet; someone who loses the right
to spend from the team wallet (removed, left, demoted to viewer) has their jobs on it cancelled,
credits released; anyone whose access shrank has their open sockets re-check it (events).

The rules themselves (who may do what, one owner per team, under the team row lock) live in
accounts.services.teams; these wrappers call them inside the same transaction.
"""

from __future__ import annotations

from django.db import transaction

from accounts import permissions as team_permissions
from accounts import services as accounts
from accounts.models import ROLE_RANK, Membership, Team
from billing import services as billing
from generation import events
from generation.models import Job
from generation.services.jobs import job_cancel


@transaction.atomic
def team_create(*, user, name: str) -> Team:
    """A team owned by `user`, with its (empty) wallet."""
    team = accounts.team_create(user=user, name=name)
    billing.wallet_get_or_create_for_team(team=team)
    return team


def _cancel_team_billed_jobs(*, team: Team, user_id) -> list[Job]:
    """Cancel the user's waiting or running jobs paid from the team wallet: queued ones stop at
    once with their hold released, a running one at its next step (job_cancel's usual path)."""
    jobs = Job.objects.filter(user_id=user_id, team=team, billed_to_team=True).active()
    return [job_cancel(job=job) for job in jobs.order_by("created_at")]


def _lost_access(*, team: Team, user_id) -> None:
    _cancel_team_billed_jobs(team=team, user_id=user_id)
    events.access_changed(user_id=user_id)


@transaction.atomic
def team_member_remove(*, team: Team, actor, user_id) -> Membership:
    removed = accounts.membership_remove(team=team, actor=actor, user_id=user_id)
    _lost_access(team=team, user_id=user_id)
    return removed


@transaction.atomic
def team_member_leave(*, team: Team, user) -> Membership:
    left = accounts.membership_leave(team=team, user=user)
    _lost_access(team=team, user_id=user.pk)
    return left


@transaction.atomic
def team_member_change_role(*, team: Team, actor, user_id, role: str) -> Membership:
    """A new role; one that can no longer bill the team loses its team-billed jobs, and any
    demotion makes the member's open sockets re-check what they may see."""
    membership, previous = accounts.membership_change_role(team=team, actor=actor, user_id=user_id, role=role)
    if not team_permissions.can_contribute(role):
        _cancel_team_billed_jobs(team=team, user_id=user_id)
    if ROLE_RANK[role] < ROLE_RANK[previous]:
        events.access_changed(user_id=user_id)
    return membership
