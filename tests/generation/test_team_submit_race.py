"""A member removed while submitting a job billed to the team: the submit waits for the removal
(both lock the membership row) and is refused, so no job is left queued on the team's wallet.
PostgreSQL (CI's second pass): under READ COMMITTED an unlocked role check would still see the
membership the removal is deleting."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from accounts.models import TeamRole
from generation import services
from generation.models import Job
from generation.services.teams import team_member_remove
from tests.billing.support import fund_team, make_team
from tests.factories import job_params, make_user


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_a_submit_racing_the_members_removal_is_refused_and_leaves_no_team_job():
    if connection.vendor != "postgresql":
        pytest.skip("READ COMMITTED row locks: CI runs this on PostgreSQL")
    owner, member = make_user(credits=10), make_user(credits=100)
    team = make_team(owner, members={member: TeamRole.MEMBER})
    fund_team(team, owner, 500)
    removing, outcome = threading.Event(), {}

    def remove() -> None:
        try:
            with transaction.atomic():
                team_member_remove(team=team, actor=owner, user_id=member.pk)
                removing.set()
                time.sleep(1.0)  # the submit arrives while the removal is not yet committed
        finally:
            connection.close()

    def submit() -> None:
        removing.wait(10)
        try:
            services.job_submit(user=member, **job_params(), team=team, bill_team=True)
            outcome["result"] = "accepted"
        except services.TeamNotAllowed:
            outcome["result"] = "refused"
        finally:
            connection.close()

    threads = [threading.Thread(target=remove), threading.Thread(target=submit)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcome == {"result": "refused"}
    assert not Job.objects.filter(user=member, team=team).active().exists()
