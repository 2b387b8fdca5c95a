"""/api/v1/images: a job made through the API and run by the real worker (demo model), then its
images listed, described, downloaded with their parameters and deleted; other people's are 404s."""

from __future__ import annotations

import io
import json
import uuid

import pytest
import torch
from django.core.files.storage import default_storage
from django.test import Client
from PIL import Image as PILImage

from accounts import services as accounts
from accounts.models import Membership, TeamRole
from generation import services, worker
from generation.models import Image, Job
from tests.api.conftest import fast_user
from tests.factories import give_credits

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _one_thread(settings):
    torch.set_num_threads(1)
    settings.STUDIO_TORCH_THREADS = 1


def key_of(user, scopes=("generate", "read_images"), team=None):
    _, token = accounts.api_key_create(actor=user, name="k", scopes=list(scopes), team=team)
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def made_through_the_api(client, auth, **fields) -> Job:
    body = {"prompt": "a red circle", "steps": 3, "width": 64, "height": 64, "seed": 5, "num_images": 2, **fields}
    response = client.post("/api/v1/generations", json.dumps(body), content_type="application/json", **auth)
    assert response.status_code == 202, response.content
    lease = services.job_claim_next(worker_id="test-worker")
    worker.run_job(lease)
    return Job.objects.get(pk=response.json()["id"])


def test_the_images_of_a_finished_generation_are_listed_described_downloaded_and_deleted(
        django_capture_on_commit_callbacks):
    client = Client()
    user = fast_user()
    give_credits(user, 100)
    auth = key_of(user)
    job = made_through_the_api(client, auth)
    detail = client.get(f"/api/v1/generations/{job.pk}", **auth).json()
    assert detail["state"] == "succeeded" and len(detail["images"]) == 2
    assert detail["credits_charged"] == job.cost

    listed = client.get("/api/v1/images", {"generation_id": str(job.pk)}, **auth).json()
    assert listed["count"] == 2 and [item["index"] for item in listed["items"]] == [0, 1]
    image = listed["items"][0]
    assert (image["prompt"], image["seed"], image["width"], image["steps"]) == ("a red circle", 5, 64, 3)
    assert "Steps: 3" in image["parameters"] and image["generation_id"] == str(job.pk)

    download = client.get(image["file_url"], **auth)
    assert download.status_code == 200 and download["Content-Type"] == "image/png"
    png = PILImage.open(io.BytesIO(b"".join(download.streaming_content)))
    assert png.size == (64, 64) and png.text["parameters"] == image["parameters"]

    stranger = key_of(fast_user())
    assert client.get(f"/api/v1/images/{image['id']}", **stranger).status_code == 404
    assert client.get(image["file_url"], **stranger).status_code == 404
    assert client.delete(f"/api/v1/images/{image['id']}", **stranger).status_code == 404
    assert client.get("/api/v1/images", **stranger).json() == {"items": [], "count": 0}

    only_generate = key_of(user, scopes=["generate"])
    assert client.get(f"/api/v1/images/{image['id']}", **only_generate).status_code == 200
    assert client.delete(f"/api/v1/images/{image['id']}", **only_generate).status_code == 403

    stored = Image.objects.get(pk=image["id"]).file.name
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(f"/api/v1/images/{image['id']}", **auth).status_code == 204
    assert not Image.objects.filter(pk=image["id"]).exists() and not default_storage.exists(stored)
    assert client.get(f"/api/v1/images/{image['id']}", **auth).status_code == 404
    assert client.get(f"/api/v1/images/{uuid.uuid4()}/file", **auth).status_code == 404


def test_a_team_key_reads_the_team_gallery_only_and_deletes_as_its_admin():
    client = Client()
    owner, member = fast_user(), fast_user()
    give_credits(member, 100)
    team = services.team_create(user=owner, name="Blue")
    Membership.objects.create(team=team, user=member, role=TeamRole.MEMBER)
    member_auth = key_of(member)
    into_team = made_through_the_api(client, member_auth, team=str(team.pk), num_images=1)
    personal = made_through_the_api(client, member_auth, num_images=1)
    team_auth = key_of(owner, scopes=["read_images"], team=team)
    listed = client.get("/api/v1/images", **team_auth).json()
    assert [item["generation_id"] for item in listed["items"]] == [str(into_team.pk)]
    personal_image = personal.images.get()
    assert client.get(f"/api/v1/images/{personal_image.pk}", **team_auth).status_code == 404
    team_image = into_team.images.get()
    assert client.delete(f"/api/v1/images/{team_image.pk}", **team_auth).status_code == 204  # admins remove anything
