"""LoRAs on Create: the picker's rows and the prompt's <lora:name:w> tags resolved against the
LoRAs I may use, job_submit's snapshot and checks, the worker's LoraRefs (local path or cache),
"reuse settings"."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from django.core.files.storage import FileSystemStorage
from django.urls import reverse

from accounts.models import Membership, TeamRole
from billing import selectors as billing_selectors
from generation import services, worker
from generation.models import Image, Job, LoRA, LoRASource
from tests.factories import job_params
from tests.factories import make_user as _make_user

pytestmark = [pytest.mark.django_db]

VALID = {
    "prompt": "a red circle", "negative_prompt": "", "aspect": "1:1", "width": "", "height": "",
    "steps": "4", "guidance_scale": "7", "sampler": "euler_a", "seed": "", "num_images": "1",
}


def make_user(**kwargs):
    return _make_user(password=None, **kwargs)


def make_lora(owner, name="zwx-dog", data=None, team=None):
    lora = services.lora_create_from_bytes(owner=owner, name=name, data=data or f"lora {uuid.uuid4()}".encode(),
                                           source=LoRASource.IMPORTED, base_model="studio-tiny")
    if team is not None:
        LoRA.objects.filter(pk=lora.pk).update(team=team)
        lora.refresh_from_db()
    return lora


def post(client, user, *, rows=(), **changes):
    client.force_login(user)
    data = {**VALID, **changes}
    if rows:
        data["lora"] = [str(lora_id) for lora_id, _ in rows]
        data["lora_weight"] = [str(weight) for _, weight in rows]
    return client.post(reverse("generation:create"), data)


@pytest.fixture
def people():
    owner, member, viewer, outsider = (make_user(credits=1000) for _ in range(4))
    team = services.team_create(user=owner, name="Team")
    Membership.objects.create(team=team, user=member, role=TeamRole.MEMBER)
    Membership.objects.create(team=team, user=viewer, role=TeamRole.VIEWER)
    return owner, member, viewer, outsider, team


def test_a_slider_row_and_a_tag_resolve_and_the_job_snapshots_them(client, people):
    owner, member, *_ = people
    mine, other = make_lora(owner, "mine"), make_lora(owner, "other")
    response = post(client, owner, rows=[(mine.pk, 0.5)], prompt="a red circle <lora:other:0.8>")
    assert response.status_code == 302, response.content.decode()[:2000]
    job = Job.objects.get(user=owner)
    assert job.loras == [
        {"id": str(mine.pk), "name": "mine", "sha256": mine.sha256, "weight": 0.5},
        {"id": str(other.pk), "name": "other", "sha256": other.sha256, "weight": 0.8},
    ]
    assert job.prompt == "a red circle <lora:other:0.8> <lora:mine:0.5>"  # the tags travel in the infotext
    assert job.cost == services.job_cost(width=job.width, height=job.height, steps=4, num_images=1)


def test_a_slider_wins_over_a_tag_of_the_same_lora(client, people):
    owner = people[0]
    mine = make_lora(owner, "mine")
    assert post(client, owner, rows=[(mine.pk, 1.5)], prompt="circle <lora:mine:0.2>").status_code == 302
    job = Job.objects.get(user=owner)
    assert job.prompt == "circle <lora:mine:1.5>" and job.loras[0]["weight"] == 1.5


def test_unknown_and_ambiguous_tags_are_named(client, people):
    owner, member, viewer, outsider, team = people
    other_team_owner = make_user()
    Membership.objects.create(team=team, user=other_team_owner, role=TeamRole.MEMBER)
    make_lora(owner, "shared", team=team)
    make_lora(other_team_owner, "shared", team=team)
    response = post(client, member, prompt="x <lora:nope:1> <lora:shared:1>")
    assert response.status_code == 400
    html = response.content.decode()
    assert "No LoRA you can use is called nope" in html and "Several LoRAs shared with your teams are called shared" \
        in html
    assert not Job.objects.filter(user=member).exists()
    # my own LoRA of that name wins over the team's
    mine = make_lora(member, "shared")
    assert post(client, member, prompt="x <lora:shared:1>").status_code == 302
    assert Job.objects.get(user=member).loras[0]["id"] == str(mine.pk)


def test_another_users_lora_is_refused_and_a_viewer_cannot_use_the_teams(client, people):
    owner, member, viewer, outsider, team = people
    shared = make_lora(owner, "shared", team=team)
    private = make_lora(owner, "private")
    for user in (outsider, viewer):
        assert post(client, user, rows=[(private.pk, 1)]).status_code == 400
        assert post(client, user, prompt="x <lora:shared>").status_code == 400
    assert post(client, member, rows=[(private.pk, 1)]).status_code == 400
    assert not Job.objects.exists()
    assert post(client, member, rows=[(shared.pk, 1)]).status_code == 302
    html = client.get(reverse("generation:create")).content.decode()
    assert f'value="{shared.pk}"' in html and f'value="{private.pk}"' not in html


def test_job_submit_refuses_a_lora_unshared_meanwhile_and_charges_nothing(people):
    owner, member, viewer, outsider, team = people
    shared = make_lora(owner, "shared", team=team)
    LoRA.objects.filter(pk=shared.pk).update(team=None)  # unshared after the form was checked
    balance = billing_selectors.wallet_balance(user=member)
    with pytest.raises(services.LoraNotAllowed, match="cannot use the LoRA shared"):
        services.job_submit(user=member, **job_params(), loras=[services.LoraChoice(shared, 1.0)])
    with pytest.raises(services.LoraNotAllowed, match="At most 5"):
        services.job_submit(user=owner, **job_params(),
                            loras=[services.LoraChoice(make_lora(owner, f"l{i}"), 1.0) for i in range(6)])
    assert not Job.objects.exists()
    assert billing_selectors.wallet_balance(user=member) == balance


def test_request_for_gives_local_paths_and_fails_clearly_when_the_lora_is_gone(people):
    owner = people[0]
    data = b"lora bytes for the worker"
    lora = make_lora(owner, "mine", data=data)
    job = services.job_submit(user=owner, **job_params(prompt="x <lora:mine:0.7>"),
                              loras=[services.LoraChoice(lora, 0.7)])
    request = worker.request_for(job)
    (ref,) = request.loras
    assert (ref.name, ref.sha256, ref.weight) == ("mine", hashlib.sha256(data).hexdigest(), 0.7)
    with open(ref.path, "rb") as handle:
        assert handle.read() == data
    LoRA.objects.filter(pk=lora.pk).delete()
    with pytest.raises(worker.LoraUnavailable, match="The LoRA mine was deleted"):
        worker.request_for(job)


class RemoteStorage:
    """A storage without local paths (as S3's): the worker must copy the file to its cache."""

    def __init__(self, location):
        self.files = FileSystemStorage(location=location)

    def open(self, name, mode="rb"):
        return self.files.open(name, mode)

    def path(self, name):
        raise NotImplementedError("This backend doesn't support absolute paths.")


def test_a_remote_storage_is_copied_to_the_cache_once_and_checked(people, settings, tmp_path, monkeypatch):
    owner = people[0]
    data = b"remote lora bytes"
    lora = make_lora(owner, "mine", data=data)
    settings.VAR_DIR = tmp_path
    remote = RemoteStorage(location=settings.MEDIA_ROOT)
    monkeypatch.setattr(worker, "default_storage", remote)
    path = worker.lora_local_path(lora)
    assert path == str(tmp_path / "cache" / "loras" / f"{lora.sha256}.safetensors")
    assert open(path, "rb").read() == data
    assert [p.name for p in (tmp_path / "cache" / "loras").iterdir()] == [f"{lora.sha256}.safetensors"]
    # a file whose bytes no longer match is refused, and nothing half-written stays
    lora.sha256 = "0" * 64
    with pytest.raises(worker.LoraUnavailable, match="does not match its sha256"):
        worker.lora_local_path(lora)
    assert len(list((tmp_path / "cache" / "loras").iterdir())) == 1


def test_reuse_settings_brings_back_the_tags_and_rows_and_names_a_lora_gone(client, people):
    owner, member, viewer, outsider, team = people
    shared = make_lora(owner, "shared", team=team)
    assert post(client, member, rows=[(shared.pk, 0.75)], prompt="circle").status_code == 302
    job = Job.objects.get(user=member)
    html = client.get(reverse("generation:create") + f"?from={job.pk}").content.decode()
    assert "circle &lt;lora:shared:0.75&gt;" in html
    assert f'value="{shared.pk}" selected' in html and 'value="0.75"' in html
    Membership.objects.filter(team=team, user=member).update(role=TeamRole.VIEWER)
    response = client.get(reverse("generation:create") + f"?from={job.pk}")
    assert response.status_code == 200
    assert "The LoRA shared is no longer yours to use" in response.content.decode() or \
        "lora-picker" not in response.content.decode()


def test_use_on_create_preselects_a_lora_i_may_use(client, people):
    owner, member, viewer, outsider, team = people
    shared = make_lora(owner, "shared", team=team)
    client.force_login(member)
    html = client.get(reverse("generation:create") + f"?lora={shared.pk}").content.decode()
    assert f'value="{shared.pk}" selected' in html
    client.force_login(outsider)
    html = client.get(reverse("generation:create") + f"?lora={shared.pk}").content.decode()
    assert str(shared.pk) not in html


def test_the_canvas_page_offers_the_picker_and_its_job_snapshots_the_loras(client, people):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.generation.test_canvas_page import CANVAS, form_fields, png_bytes

    owner = people[0]
    mine, tagged = make_lora(owner, "mine"), make_lora(owner, "tagged")
    client.force_login(owner)
    fields = form_fields(client.get(CANVAS).content.decode())
    assert "lora" in fields.names and "lora_weight" in fields.names
    data = {**fields.values, "prompt": "the sea <lora:tagged:0.4>", "mode": "outpaint", "outpaint_right": "64",
            "lora": str(mine.pk), "lora_weight": "1.25",
            "source": SimpleUploadedFile("photo.png", png_bytes((96, 64)), content_type="image/png")}
    response = client.post(CANVAS, data)
    assert response.status_code == 302, response.content.decode()[:1500]
    job = Job.objects.get(user=owner)
    assert job.mode == "outpaint" and job.prompt == "the sea <lora:tagged:0.4> <lora:mine:1.25>"
    assert [(entry["name"], entry["weight"]) for entry in job.loras] == [("mine", 1.25), ("tagged", 0.4)]
    assert [ref.name for ref in worker.request_for(job).loras] == ["mine", "tagged"]


def test_the_job_and_image_pages_list_the_loras_used_linking_those_still_visible(client, people):
    owner, member, *_ = people
    mine, gone = make_lora(owner, "mine"), make_lora(owner, "gone")
    post(client, owner, rows=[(mine.pk, 0.5), (gone.pk, 1.25)])
    job = Job.objects.get(user=owner)
    Job.objects.filter(pk=job.pk).update(state="succeeded")  # a finished job: nothing uses the LoRA now
    services.lora_delete(user=owner, lora=gone)
    page = client.get(reverse("generation:job_detail", args=[job.pk])).content.decode()
    listed = page[page.index("data-job-loras"):]
    assert f'<a href="{reverse("generation:lora_detail", args=[mine.pk])}">mine</a>' in listed
    assert "× 0.5" in listed and mine.sha256[:12] in listed
    assert "gone\n" in listed and "× 1.25" in listed  # named, no longer linked
    assert reverse("generation:lora_detail", args=[gone.pk]) not in page

    image = Image.objects.create(job=job, owner=owner, index=0, seed=1, width=64, height=64, file="images/x.png")
    page = client.get(reverse("generation:image_detail", args=[image.pk])).content.decode()
    assert "<dt>LoRAs</dt>" in page and f'{reverse("generation:lora_detail", args=[mine.pk])}">mine</a>' in page
