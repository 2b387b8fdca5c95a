"""/api/v1/loras: the LoRAs a key may use, one LoRA, its file (the web's download permission),
import (the web's service: a bad file is a 422 with its message), delete (409 while a job uses it),
scopes, team keys and other people's LoRAs."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts import services as accounts
from accounts.models import Membership, TeamRole
from generation import services
from generation.models import LoRA, LoRASource
from tests.api.conftest import fast_user
from tests.factories import give_credits, submit_job
from tests.generation.test_training_pages import fitting_lora

pytestmark = pytest.mark.django_db
URL = "/api/v1/loras"


def keyed(scopes=("train",), user=None, **fields):
    user = user or fast_user()
    _, token = accounts.api_key_create(actor=user, name="k", scopes=list(scopes), **fields)
    return user, {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def stored_lora(owner, name="style", **fields) -> LoRA:
    lora = services.lora_create_from_bytes(owner=owner, name=name, data=b"lora bytes " + name.encode(),
                                           source=LoRASource.TRAINED, base_model="studio-tiny", rank=4)
    LoRA.objects.filter(pk=lora.pk).update(**fields)
    return LoRA.objects.get(pk=lora.pk)


def import_file(client, auth, *, name="imported", data=None, filename="style.safetensors", **headers):
    return client.post(URL, {"name": name, "lora_file": SimpleUploadedFile(
        filename, data if data is not None else fitting_lora())}, **auth, **headers)


def test_import_a_fitting_lora_then_list_get_download_and_delete_it(client):
    user, auth = keyed()
    created = import_file(client, auth)
    assert created.status_code == 201, created.content
    body = created.json()
    lora = LoRA.objects.get(owner=user)
    assert (body["id"], body["name"], body["rank"], body["source"], body["mine"]) == (
        str(lora.pk), "imported", 2, "imported", True)
    assert body["sha256"] == lora.sha256 and body["size_bytes"] == lora.size_bytes and body["may_download"]
    assert created["Location"] == f"{URL}/{lora.pk}"
    assert [item["id"] for item in client.get(URL, **auth).json()["items"]] == [str(lora.pk)]
    assert client.get(f"{URL}/{lora.pk}", **auth).json()["name"] == "imported"
    download = client.get(body["file_url"], **auth)
    assert download.status_code == 200 and b"".join(download.streaming_content) == fitting_lora()
    assert 'filename="imported.safetensors"' in download["Content-Disposition"]
    assert import_file(client, auth).status_code == 409  # the name is taken
    assert client.delete(f"{URL}/{lora.pk}", **auth).status_code == 204
    assert not LoRA.objects.exists()
    assert client.get(f"{URL}/{lora.pk}", **auth).status_code == 404


def test_an_import_retried_with_its_idempotency_key_imports_once(client):
    user, auth = keyed()
    first = import_file(client, auth, HTTP_IDEMPOTENCY_KEY="import-1")
    again = import_file(client, auth, HTTP_IDEMPOTENCY_KEY="import-1")
    assert first.status_code == again.status_code == 201 and first.json()["id"] == again.json()["id"]
    assert again["Idempotent-Replayed"] == "true" and LoRA.objects.filter(owner=user).count() == 1
    other_file = import_file(client, auth, data=fitting_lora() + b" ", HTTP_IDEMPOTENCY_KEY="import-1")
    assert other_file.status_code == 409  # the same key with another file
    assert import_file(client, auth, name="another", HTTP_IDEMPOTENCY_KEY="import-1").status_code == 409


@pytest.mark.parametrize(("filename", "data", "message"), [
    ("model.ckpt", b"PK\x03\x04" + b"\0" * 200, "pickle"),
    ("style.safetensors", b"not a safetensors file at all", ""),
])
def test_a_bad_file_is_422_with_the_services_message_and_nothing_kept(client, filename, data, message):
    _, auth = keyed()
    response = import_file(client, auth, data=data, filename=filename)
    assert response.status_code == 422 and response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"][0]["loc"] == ["body", "lora_file"] and message in problem["detail"].lower()
    assert not LoRA.objects.exists()
    assert client.post(URL, {"name": "x y"}, **auth).status_code == 422  # no file, a bad name
    assert client.post(URL, "{}", content_type="application/json", **auth).status_code == 415


def test_a_lora_in_use_by_an_active_job_cannot_be_deleted(client):
    user, auth = keyed()
    lora = stored_lora(user)
    give_credits(user, 100)
    job = submit_job(user)
    job.loras = [{"id": str(lora.pk), "name": lora.name, "sha256": lora.sha256, "weight": 1.0}]
    job.save(update_fields=["loras"])
    refused = client.delete(f"{URL}/{lora.pk}", **auth)
    assert refused.status_code == 409 and "1 queued or running job uses this LoRA" in refused.json()["detail"]
    assert LoRA.objects.filter(pk=lora.pk).exists()


def test_team_loras_scopes_and_other_peoples_loras(client):
    owner, owner_auth = keyed(scopes=("generate",))
    team = accounts.team_create(user=owner, name="Crew")
    member = fast_user()
    Membership.objects.create(team=team, user=member, role=TeamRole.MEMBER)
    shared = stored_lora(owner, "shared", team=team)
    private = stored_lora(owner, "private")
    _, member_auth = keyed(scopes=("read_images", "train"), user=member)
    _, stranger_auth = keyed(user=fast_user())

    listing = client.get(URL, **member_auth).json()
    assert [(item["name"], item["mine"], item["may_download"]) for item in listing["items"]] == [
        ("shared", False, False)]
    assert client.get(f"{URL}/{shared.pk}/file", **member_auth).status_code == 403  # downloads not allowed
    assert client.delete(f"{URL}/{shared.pk}", **member_auth).status_code == 403  # not the owner
    assert client.get(f"{URL}/{private.pk}", **member_auth).status_code == 404
    assert client.get(f"{URL}/{private.pk}/file", **stranger_auth).status_code == 404
    assert client.delete(f"{URL}/{private.pk}", **stranger_auth).status_code == 404

    assert {item["name"] for item in client.get(URL, **owner_auth).json()["items"]} == {"shared", "private"}
    assert client.delete(f"{URL}/{private.pk}", **owner_auth).status_code == 403  # `generate` cannot delete
    assert import_file(client, owner_auth).status_code == 403

    _, team_auth = keyed(scopes=("read_images",), user=owner, team=team)
    assert [item["name"] for item in client.get(URL, **team_auth).json()["items"]] == ["shared"]
    assert client.get(f"{URL}/{private.pk}", **team_auth).status_code == 404
    LoRA.objects.filter(pk=shared.pk).update(team_may_download=True)
    assert client.get(f"{URL}/{shared.pk}/file", **team_auth).status_code == 200
    _, team_train = keyed(scopes=("train",), user=owner, team=team)
    refused = import_file(client, team_train)
    assert refused.status_code == 403 and "team key" in refused.json()["detail"]
    assert LoRA.objects.count() == 2
