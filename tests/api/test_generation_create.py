"""POST /api/v1/generations and /cancel: every mode, LoRAs, the web form's rules as 422s, money
(402s, the key's cap, Idempotency-Key, cancel refunds), team keys and other people's jobs."""

from __future__ import annotations

import base64
import io
import json
import uuid

import pytest
from PIL import Image as PILImage

from accounts import services as accounts
from accounts.models import Membership, TeamRole
from billing.models import EntryKind, LedgerEntry
from billing.selectors import team_wallet_balance, wallet_balance
from billing.services import credits_transfer_to_team
from generation import services as generation
from generation.models import Job, JobState, LoRASource
from tests.api.conftest import fast_user
from tests.factories import give_credits

pytestmark = pytest.mark.django_db
URL = "/api/v1/generations"


def png(size=(64, 64), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def mask_png(size=(64, 64)) -> bytes:
    mask = PILImage.new("L", size, 0)
    mask.paste(255, (16, 16, 48, 48))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def keyed(scopes=("generate", "read_images"), credits=100, **fields):
    user = fast_user()
    if credits:
        give_credits(user, credits)
    _, token = accounts.api_key_create(actor=user, name="k", scopes=list(scopes), **fields)
    return user, {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def post_json(client, auth, body, **headers):
    return client.post(URL, json.dumps(body), content_type="application/json", **auth, **headers)


def test_a_text_to_image_job_is_queued_charged_through_the_key_and_described():
    from django.test import Client

    client = Client()
    user, auth = keyed()
    response = post_json(client, auth, {"prompt": "a red star", "steps": 4, "width": 64, "height": 64, "seed": 7})
    assert response.status_code == 202, response.content
    body = response.json()
    job = Job.objects.get(pk=body["id"])
    assert (job.user, job.prompt, job.steps, job.width, job.seed, job.mode) == (user, "a red star", 4, 64, 7, "txt2img")
    assert response["Location"] == f"{URL}/{job.pk}"
    assert body["cost"] == job.cost and body["credits_charged"] == job.cost and body["queue_position"] == 1
    assert response["X-Credits-Charged"] == str(job.cost)
    assert response["X-Credits-Balance"] == str(100 - job.cost) == str(wallet_balance(user=user)[0])
    hold = LedgerEntry.objects.get(subject=job.billing_subject, kind=EntryKind.RESERVE)
    assert hold.api_key.owner_user == user
    # the model's defaults fill what was left out
    assert body["sampler"] and body["guidance_scale"] and body["progress"] == {
        "step": 0, "total_steps": 4, "eta_seconds": None, "preview_url": None}
    assert client.get(f"{URL}/{job.pk}", **auth).json()["id"] == str(job.pk)


def test_the_web_forms_rules_answer_422_with_where(client):
    _, auth = keyed()
    response = post_json(client, auth, {"prompt": "", "steps": 4})
    assert response.status_code == 422 and response["Content-Type"] == "application/problem+json"
    assert response.json()["errors"][0]["loc"] == ["body", "prompt"]
    response = post_json(client, auth, {"prompt": "x", "width": 64})  # the web's own rule: both or neither
    assert response.status_code == 422 and "width and height" in response.json()["detail"]
    response = post_json(client, auth, {"prompt": "x", "steps": 0, "sampler": "nope"})
    assert response.status_code == 422
    assert {tuple(error["loc"]) for error in response.json()["errors"]} == {("body", "steps"), ("body", "sampler")}
    assert post_json(client, auth, {"prompt": "x", "width": 4000, "height": 4000}).status_code == 422
    assert client.post(URL, "not json", content_type="application/json", **auth).status_code == 400
    assert client.post(URL, "prompt=x", content_type="text/plain", **auth).status_code == 415
    assert Job.objects.count() == 0


def test_image_to_image_inpaint_and_outpaint_from_uploads_base64_and_my_own_image(client):
    user, auth = keyed(credits=1000)
    multipart = client.post(URL, {"prompt": "a blue star", "steps": "4", "strength": "0.5",
                                  "source": io.BytesIO(png()), "mask": io.BytesIO(mask_png())}, **auth)
    assert multipart.status_code == 202, multipart.content
    inpaint = Job.objects.get(pk=multipart.json()["id"])
    assert inpaint.mode == "inpaint" and inpaint.source_file and inpaint.mask_file and inpaint.strength == 0.5

    img2img = post_json(client, auth, {"prompt": "a blue star", "steps": 4, "source": "data:image/png;base64,"
                                       + b64(png((96, 64))), "mode": "img2img"})
    assert img2img.status_code == 202 and (img2img.json()["width"], img2img.json()["height"]) == (96, 64)

    outpaint = post_json(client, auth, {"prompt": "more sky", "steps": 4, "source": b64(png()), "mode": "outpaint",
                                        "outpaint_top": 32})
    assert outpaint.status_code == 202 and (outpaint.json()["width"], outpaint.json()["height"]) == (64, 96)

    from generation.models import Image

    mine = Image.objects.create(job=inpaint, owner=user, index=0, seed=1, width=64, height=64,
                                file=inpaint.source_file.name)
    again = post_json(client, auth, {"prompt": "x", "steps": 4, "source_image": str(mine.pk)})
    assert again.status_code == 202 and again.json()["mode"] == "img2img"

    refused = post_json(client, auth, {"prompt": "x", "steps": 4, "source": b64(b"GIF89a" + b"\0" * 64)})
    assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == ["body", "source"]
    assert post_json(client, auth, {"prompt": "x", "source": "%%%"}).status_code == 422
    assert post_json(client, auth, {"prompt": "x", "mode": "inpaint", "source": b64(png())}).status_code == 422
    _, stranger = keyed()
    assert post_json(client, stranger, {"prompt": "x", "source_image": str(mine.pk)}).status_code == 422


def test_loras_by_id_or_name_and_a_lora_not_mine(client):
    user, auth = keyed()
    lora = generation.lora_create_from_bytes(owner=user, name="zwx", data=b"lora-bytes", source=LoRASource.IMPORTED,
                                             base_model="studio-demo")
    response = post_json(client, auth, {"prompt": "a dog", "steps": 4, "loras": [{"id": str(lora.pk), "weight": 0.5}]})
    assert response.status_code == 202, response.content
    assert response.json()["loras"] == [{"id": str(lora.pk), "name": "zwx", "sha256": lora.sha256, "weight": 0.5}]
    by_name = post_json(client, auth, {"prompt": "a dog", "steps": 4, "loras": [{"name": "zwx", "weight": 0.8}]})
    assert by_name.status_code == 202 and by_name.json()["loras"][0]["weight"] == 0.8

    other, other_auth = keyed()
    refused = post_json(client, other_auth, {"prompt": "a dog", "loras": [{"id": str(lora.pk)}]})
    assert refused.status_code == 422 and "cannot use" in refused.json()["detail"]
    assert post_json(client, other_auth, {"prompt": "a dog <lora:zwx:1>"}).status_code == 422
    assert not Job.objects.filter(user=other).exists()


def test_not_enough_credits_or_the_keys_cap_is_a_402_and_nothing_is_held(client):
    poor, auth = keyed(credits=0)
    response = post_json(client, auth, {"prompt": "x", "steps": 4})
    assert response.status_code == 402 and response.json()["type"].endswith("/insufficient-credits")
    user, capped = keyed(credits=100, monthly_credit_cap=1)
    assert post_json(client, capped, {"prompt": "x", "steps": 4, "width": 64, "height": 64}).status_code == 202
    response = post_json(client, capped, {"prompt": "x", "steps": 4, "width": 64, "height": 64})
    assert response.status_code == 402 and response.json()["type"].endswith("/key-cap-reached")
    assert Job.objects.filter(user=user).count() == 1 and not Job.objects.filter(user=poor).exists()
    assert wallet_balance(user=user) == (99, 1)


def test_an_idempotency_key_retried_charges_once_and_another_body_is_a_409(client):
    user, auth = keyed()
    body = {"prompt": "a red star", "steps": 4, "width": 64, "height": 64}
    first = post_json(client, auth, body, HTTP_IDEMPOTENCY_KEY="order-1")
    again = post_json(client, auth, {"height": 64, "width": 64, "steps": 4, "prompt": "a red star"},
                      HTTP_IDEMPOTENCY_KEY="order-1")
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    assert again["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert LedgerEntry.objects.filter(kind=EntryKind.RESERVE, wallet__owner_user=user).count() == 1
    conflict = post_json(client, auth, {**body, "prompt": "a blue star"}, HTTP_IDEMPOTENCY_KEY="order-1")
    assert conflict.status_code == 409 and conflict.json()["type"].endswith("/conflict")
    assert post_json(client, auth, body, HTTP_IDEMPOTENCY_KEY="order-2").json()["id"] != first.json()["id"]
    assert post_json(client, auth, body, HTTP_IDEMPOTENCY_KEY="x" * 300).status_code == 400


def test_cancel_refunds_a_queued_job_and_a_finished_one_is_a_409(client):
    user, auth = keyed()
    job_id = post_json(client, auth, {"prompt": "x", "steps": 4}).json()["id"]
    response = client.post(f"{URL}/{job_id}/cancel", **auth)
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    assert response.json()["credits_charged"] == 0 and response["X-Credits-Charged"] == "0"
    assert wallet_balance(user=user) == (100, 0)
    assert client.post(f"{URL}/{job_id}/cancel", **auth).status_code == 409

    running_id = post_json(client, auth, {"prompt": "x", "steps": 4}).json()["id"]
    Job.objects.filter(pk=running_id).update(state=JobState.RUNNING)
    response = client.post(f"{URL}/{running_id}/cancel", **auth)
    assert response.status_code == 200 and Job.objects.get(pk=running_id).cancel_requested

    _, stranger = keyed()
    assert client.post(f"{URL}/{running_id}/cancel", **stranger).status_code == 404
    _, reader = keyed(scopes=["read_images"])
    assert client.post(f"{URL}/{running_id}/cancel", **reader).status_code == 403
    assert client.post(f"{URL}/{uuid.uuid4()}/cancel", **auth).status_code == 404


def test_a_team_key_saves_into_its_team_on_the_teams_wallet_until_its_maker_is_demoted(client):
    owner, admin = fast_user(), fast_user()
    give_credits(owner, 100)
    team = generation.team_create(user=owner, name="Blue")
    Membership.objects.create(team=team, user=admin, role=TeamRole.ADMIN)
    credits_transfer_to_team(user=owner, team=team, amount=50, idempotency_key="t1")
    _, token = accounts.api_key_create(actor=admin, name="team", scopes=["generate"], team=team)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    response = post_json(client, auth, {"prompt": "x", "steps": 4, "width": 64, "height": 64})
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert (job.user, job.team, job.billed_to_team) == (admin, team, True)
    assert response["X-Credits-Balance"] == str(team_wallet_balance(team_id=team.pk)[0]) == "49"

    # a user's key may save into a team it creates in, and bill it
    member_key_user, member_auth = keyed()
    Membership.objects.create(team=team, user=member_key_user, role=TeamRole.MEMBER)
    response = post_json(client, member_auth, {"prompt": "x", "steps": 4, "width": 64, "height": 64,
                                               "team": str(team.pk), "bill_team": True})
    assert response.status_code == 202 and response.json()["team_id"] == str(team.pk)
    _, outsider = keyed()
    assert post_json(client, outsider, {"prompt": "x", "team": str(team.pk)}).status_code == 403

    Membership.objects.filter(team=team, user=admin).update(role=TeamRole.MEMBER)  # not through the service
    assert post_json(client, auth, {"prompt": "x", "steps": 4}).status_code == 403
