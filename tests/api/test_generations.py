"""GET /generations and /generations/{id}: a key reads its own jobs only (a user's key its user's, a
team's key its team's); anyone else's is a 404; the scope is checked."""

from __future__ import annotations

import uuid

import pytest

from accounts import services as accounts
from accounts.models import Membership, TeamRole
from generation import services as generation
from generation.models import JobState
from tests.api.conftest import fast_user
from tests.factories import give_credits, submit_job

pytestmark = [pytest.mark.django_db]


def bearer(token):
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_a_key_reads_its_own_generations_and_nobody_elses(client):
    ada, bob = fast_user(), fast_user()
    give_credits(ada, 100)
    give_credits(bob, 100)
    first = submit_job(ada, prompt="a red circle", steps=4)
    second = submit_job(ada, prompt="a blue square", steps=5, num_images=2)
    bobs = submit_job(bob)
    _, ada_token = accounts.api_key_create(actor=ada, name="a", scopes=["read_images"])
    _, bob_token = accounts.api_key_create(actor=bob, name="b", scopes=["generate"])
    _, train_only = accounts.api_key_create(actor=ada, name="t", scopes=["train"])

    one = client.get(f"/api/v1/generations/{first.pk}", **bearer(ada_token))
    assert one.status_code == 200
    body = one.json()
    assert body["id"] == str(first.pk) and body["state"] == "queued" and body["prompt"] == "a red circle"
    assert body["progress"] == {"step": 0, "total_steps": 4, "eta_seconds": None, "preview_url": None}
    assert body["queue_position"] == 1
    assert body["cost"] == first.cost and body["images"] == []

    listing = client.get("/api/v1/generations?limit=1", **bearer(ada_token)).json()
    assert listing["count"] == 2 and [item["id"] for item in listing["items"]] == [str(second.pk)]
    assert client.get("/api/v1/generations?state=succeeded", **bearer(ada_token)).json() == {"items": [], "count": 0}

    for job_id in (bobs.pk, uuid.uuid4()):  # another's job and no job: the same 404
        response = client.get(f"/api/v1/generations/{job_id}", **bearer(ada_token))
        assert response.status_code == 404 and response.json()["type"] == "/api/problems/not-found"
    assert client.get(f"/api/v1/generations/{first.pk}", **bearer(bob_token)).status_code == 404
    assert [i["id"] for i in client.get("/api/v1/generations", **bearer(bob_token)).json()["items"]] == [str(bobs.pk)]
    refused = client.get(f"/api/v1/generations/{first.pk}", **bearer(train_only))
    assert refused.status_code == 403 and refused.json()["type"] == "/api/problems/insufficient-scope"
    assert client.get("/api/v1/generations/not-a-uuid", **bearer(ada_token)).status_code == 422
    assert client.get("/api/v1/generations?state=lost", **bearer(ada_token)).status_code == 422


def test_a_team_key_reads_the_teams_generations(client):
    owner, member = fast_user(), fast_user()
    team = generation.team_create(user=owner, name="Blue")
    Membership.objects.create(team=team, user=member, role=TeamRole.MEMBER)
    give_credits(member, 100)
    into_team = submit_job(member, team=team)
    private = submit_job(member)
    _, token = accounts.api_key_create(actor=owner, name="ci", scopes=["read_images"], team=team)
    items = client.get("/api/v1/generations", **bearer(token)).json()["items"]
    assert [item["id"] for item in items] == [str(into_team.pk)]
    assert client.get(f"/api/v1/generations/{private.pk}", **bearer(token)).status_code == 404
    generation.job_cancel(job=into_team)
    cancelled = client.get(f"/api/v1/generations/{into_team.pk}", **bearer(token)).json()
    assert cancelled["state"] == JobState.CANCELLED and cancelled["queue_position"] is None
