"""/api/v1/trainings: start one from uploads (the web's forms and upload checks as 422s), money
(the hold records the key, 402, Idempotency-Key, cancel refunds), reading one with its loss curve
and samples, scopes, team keys and other people's trainings."""

from __future__ import annotations

import io
import json

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from accounts import services as accounts
from billing.models import EntryKind, LedgerEntry
from billing.selectors import wallet_balance
from generation.models import Job, JobKind, JobState, Training
from tests.api.conftest import fast_user
from tests.factories import give_credits

pytestmark = pytest.mark.django_db
URL = "/api/v1/trainings"


def png(colour=(200, 30, 30), size=64) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def pictures(count=3) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(f"{index}.png", png((index * 40, 30, 30)), content_type="image/png")
            for index in range(count)]


def keyed(scopes=("train", "read_images"), credits=10_000, user=None, **fields):
    user = user or fast_user()
    if credits:
        give_credits(user, credits)
    _, token = accounts.api_key_create(actor=user, name="k", scopes=list(scopes), **fields)
    return user, {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def start(client, auth, *, images=None, headers=None, **fields):
    body = {"name": "zwx-dog", "instance_prompt": "a photo of zwx dog", "preset": "quick",
            "images": images if images is not None else pictures(), **fields}
    return client.post(URL, body, **auth, **(headers or {}))


def test_a_training_is_queued_charged_through_the_key_and_described(client):
    user, auth = keyed()
    response = start(client, auth, captions=json.dumps(["zwx dog red", "zwx dog", "zwx dog blue"]), steps="20")
    assert response.status_code == 202, response.content
    body = response.json()
    job = Job.objects.get(pk=body["id"])
    assert (job.user, job.kind, job.steps, job.training.name, job.training.preset) == (
        user, JobKind.TRAIN, 20, "zwx-dog", "quick")
    assert [image.caption for image in job.training.images.order_by("index")] == ["zwx dog red", "zwx dog",
                                                                                  "zwx dog blue"]
    hold = LedgerEntry.objects.get(subject=job.billing_subject, kind=EntryKind.RESERVE)
    assert hold.api_key.owner_user == user
    assert body["cost"] == job.cost == body["credits_charged"] > 0 and body["queue_position"] == 1
    assert response["X-Credits-Balance"] == str(10_000 - job.cost) == str(wallet_balance(user=user)[0])
    assert response["Location"] == f"{URL}/{job.pk}"
    assert body["progress"] == {"step": 0, "total_steps": 20, "eta_seconds": None} and body["lora_id"] is None

    listing = client.get(URL, **auth).json()
    assert listing["count"] == 1 and listing["items"][0]["id"] == str(job.pk)


def test_the_web_forms_rules_and_upload_checks_answer_422_naming_the_field(client):
    _, auth = keyed()
    too_few = start(client, auth, images=pictures(2))
    assert too_few.status_code == 422 and "a training takes 3 to 50" in too_few.json()["detail"]
    gif = SimpleUploadedFile("cat.gif", b"GIF89a" + b"\0" * 64, content_type="image/gif")
    not_a_picture = start(client, auth, images=[*pictures(3), gif])
    assert not_a_picture.status_code == 422 and not_a_picture.json()["errors"][0]["loc"] == ["body", "images"]
    assert "cat.gif" in not_a_picture.json()["detail"]
    bad_name = start(client, auth, name="no spaces please")
    assert bad_name.status_code == 422 and bad_name.json()["errors"][0]["loc"] == ["body", "name"]
    steps = start(client, auth, steps="3", method="nope")
    assert {tuple(e["loc"]) for e in steps.json()["errors"]} == {("body", "steps"), ("body", "method")}
    captions = start(client, auth, captions=json.dumps(["one"]))
    assert captions.status_code == 422 and captions.json()["errors"][0]["loc"] == ["body", "captions"]
    dreambooth = start(client, auth, method="dreambooth")  # no instance token: the web's rule
    assert dreambooth.status_code == 422 and dreambooth.json()["errors"][0]["loc"] == ["body", "instance_token"]
    assert client.post(URL, "{}", content_type="application/json", **auth).status_code == 415
    assert not Job.objects.exists() and not LedgerEntry.objects.filter(kind=EntryKind.RESERVE).exists()


def test_dreambooth_takes_several_class_prompts_one_per_line_and_a_prior_weight(client):
    _, auth = keyed()
    fields = dict(method="dreambooth", instance_token="zwx", steps="20", num_class_images="4")
    in_prompt = start(client, auth, class_prompt="a photo of a dog\na zwx dog", **fields)
    assert in_prompt.status_code == 422 and in_prompt.json()["errors"][0]["loc"] == ["body", "class_prompt"]
    assert "class prompt 2 must not contain the instance token" in in_prompt.json()["detail"]
    heavy = start(client, auth, class_prompt="a photo of a dog", prior_loss_weight="12", **fields)
    assert heavy.status_code == 422 and heavy.json()["errors"][0]["loc"] == ["body", "prior_loss_weight"]
    assert not Job.objects.exists()
    response = start(client, auth, class_prompt="a photo of a dog\na photo of a cat", prior_loss_weight="1.5",
                     **fields)
    assert response.status_code == 202, response.content
    training = Training.objects.get(pk=response.json()["id"])
    assert (training.class_prompts, training.prior_loss_weight) == (["a photo of a dog", "a photo of a cat"], 1.5)


def test_not_enough_credits_is_402_and_a_taken_name_409_with_nothing_kept(client):
    user, auth = keyed(credits=1)
    poor = start(client, auth)
    assert poor.status_code == 402 and poor.json()["type"].endswith("/insufficient-credits")
    assert not Job.objects.exists()
    give_credits(user, 10_000)
    assert start(client, auth).status_code == 202
    taken = start(client, auth)
    assert taken.status_code == 409 and "zwx-dog" in taken.json()["detail"]
    assert Job.objects.count() == 1


def test_an_idempotent_retry_returns_the_same_training_charged_once(client):
    _, auth = keyed()
    first = start(client, auth, headers={"HTTP_IDEMPOTENCY_KEY": "retry-1"})
    again = start(client, auth, headers={"HTTP_IDEMPOTENCY_KEY": "retry-1"})
    assert first.status_code == again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    assert first.json()["id"] == again.json()["id"] and Job.objects.count() == 1
    assert LedgerEntry.objects.filter(kind=EntryKind.RESERVE).count() == 1
    other = start(client, auth, name="other", headers={"HTTP_IDEMPOTENCY_KEY": "retry-1"})
    assert other.status_code == 409 and Job.objects.count() == 1


def test_cancel_refunds_a_queued_training_and_is_409_once_final(client):
    user, auth = keyed()
    job_id = start(client, auth).json()["id"]
    cancelled = client.post(f"{URL}/{job_id}/cancel", **auth)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["credits_charged"] == 0 and wallet_balance(user=user)[0] == 10_000
    assert cancelled["X-Credits-Balance"] == "10000"
    assert client.post(f"{URL}/{job_id}/cancel", **auth).status_code == 409


def test_detail_shows_the_loss_curve_samples_and_the_lora(client):
    user, auth = keyed()
    job = Job.objects.get(pk=start(client, auth).json()["id"])
    sample = default_storage.save(f"trainings/{user.pk}/{job.pk}/s5.png", ContentFile(png()))
    Training.objects.filter(pk=job.pk).update(losses=[[1, 0.5], [2, None], [3, 0.25]],
                                              samples=[{"step": 5, "files": [sample]}])
    Job.objects.filter(pk=job.pk).update(state=JobState.RUNNING, progress_step=3)
    body = client.get(f"{URL}/{job.pk}", **auth).json()
    assert body["losses"] == [[1, 0.5], [3, 0.25]] and body["progress"]["step"] == 3
    url = body["samples"][0]["urls"][0]
    assert body["samples"][0]["step"] == 5 and url == f"{URL}/{job.pk}/samples/5/0"
    picture = client.get(url, **auth)
    assert picture.status_code == 200 and picture["Content-Type"] == "image/png"
    assert client.get(f"{URL}/{job.pk}/samples/5/1", **auth).status_code == 404


def test_scopes_team_keys_and_other_peoples_trainings(client):
    owner, auth = keyed()
    job_id = start(client, auth).json()["id"]
    _, stranger = keyed()
    assert client.get(f"{URL}/{job_id}", **stranger).status_code == 404
    assert client.post(f"{URL}/{job_id}/cancel", **stranger).status_code == 404
    _, generate_only = keyed(scopes=("generate",), user=owner, credits=0)
    assert start(client, generate_only).status_code == 403
    assert client.get(URL, **generate_only).status_code == 403
    _, read_only = keyed(scopes=("read_images",), user=owner, credits=0)
    assert client.get(f"{URL}/{job_id}", **read_only).status_code == 200
    assert client.post(f"{URL}/{job_id}/cancel", **read_only).status_code == 403

    team = accounts.team_create(user=owner, name="Crew")
    _, team_auth = keyed(user=owner, credits=0, team=team)
    refused = start(client, team_auth, name="team-dog")
    assert refused.status_code == 403 and "team key" in refused.json()["detail"]
    assert client.get(URL, **team_auth).json()["count"] == 0
    assert Job.objects.filter(kind=JobKind.TRAIN).count() == 1
