"""The fine-tuning pages: a new training's two steps, a training's page and its files, the LoRA
library's pages (import, download, rename, share, unshare, delete), the nav link."""

from __future__ import annotations

import io
import json
import math
import re
import struct

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image as PILImage

from accounts.models import Membership, TeamRole
from generation import selectors, services
from generation.engine.lora_format import model_modules
from generation.models import Job, JobKind, JobState, LoRA, LoRASource, Training, TrainingImage
from tests.factories import make_user as _make_user
from tests.factories import submit_job

pytestmark = [pytest.mark.django_db]


def make_user(**kwargs):
    """A user without a password (hashing one costs most of a test here; force_login needs none)."""
    return _make_user(password=None, **kwargs)


def png(colour=(200, 40, 40), size=48) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (size, size), colour).save(buffer, "PNG")
    return buffer.getvalue()


def upload(name="a.png", data=None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data if data is not None else png(), content_type="image/png")


def signed_in(client, **kwargs):
    user = make_user(**kwargs)
    client.force_login(user)
    return user


# --- A new training, step 1: the pictures ------------------------------------------------------------

def test_step_one_refuses_too_few_pictures_and_a_file_that_is_not_a_picture(client):
    signed_in(client)
    url = reverse("generation:training_new")
    response = client.post(url, {"instance_prompt": "a photo of zwx dog", "images": [upload(), upload("b.png")]})
    assert response.status_code == 400
    assert "2 pictures: a training takes 3 to 50" in response.content.decode()
    gif = SimpleUploadedFile("cat.gif", b"GIF89a" + b"\0" * 64, content_type="image/gif")
    response = client.post(url, {"instance_prompt": "a photo of zwx dog",
                                 "images": [upload(), upload("b.png"), upload("c.png"), gif]})
    assert response.status_code == 400
    assert "cat.gif: This file is a GIF image" in response.content.decode()
    assert "training_draft" not in client.session


def test_step_one_keeps_uploads_and_gallery_picks_as_a_draft_and_step_two_prefills_the_captions(client):
    user = signed_in(client, credits=100)
    job = submit_job(user)
    from generation.models import Image

    name = default_storage.save(f"images/test/{job.pk}.png", ContentFile(png((10, 200, 10), 64)))
    image = Image.objects.create(job=job, owner=user, index=0, seed=1, width=64, height=64, file=name)
    stranger_image_id = "00000000-0000-0000-0000-000000000000"
    response = client.post(reverse("generation:training_new"), {
        "instance_prompt": "a photo of zwx dog", "images": [upload(), upload("b.png")],
        "gallery_images": [str(image.pk)]})
    assert response.status_code == 302 and response["Location"] == reverse("generation:training_settings")
    draft = client.session["training_draft"]
    assert [item["source_image"] for item in draft["images"]] == [None, None, str(image.pk)]

    page = client.get(reverse("generation:training_settings")).content.decode()
    captions = re.findall(r'<textarea name="caption_\d+"[^>]*>\s*([^<]*)</textarea>', page)
    assert captions == ["a photo of zwx dog"] * 3
    assert 'name="full_finetune"' not in page  # only for users an admin allowed
    picture = client.get(reverse("generation:training_draft_image", args=[2]))
    assert picture.status_code == 200 and picture["Content-Type"] == "image/png"
    assert client.get(reverse("generation:training_draft_image", args=[3])).status_code == 404

    # Someone else's image cannot be picked (it is not among the choices).
    response = client.post(reverse("generation:training_new"), {
        "instance_prompt": "x", "images": [upload(), upload("b.png")], "gallery_images": [stranger_image_id]})
    assert response.status_code == 400


def test_step_two_without_a_draft_goes_back_to_step_one(client):
    signed_in(client)
    response = client.get(reverse("generation:training_settings"))
    assert response.status_code == 302 and response["Location"] == reverse("generation:training_new")


def test_an_abandoned_draft_is_swept_after_a_day_and_its_page_starts_again(client, settings, tmp_path):
    from datetime import timedelta

    from django.utils import timezone

    from generation.services import training_drafts_sweep_abandoned

    settings.MEDIA_ROOT = str(tmp_path)  # only this test's drafts
    signed_in(client)
    client.post(reverse("generation:training_new"), {
        "instance_prompt": "a photo of zwx dog", "images": [upload(), upload("b.png"), upload("c.png")]})
    files = [item["file"] for item in client.session["training_draft"]["images"]]
    settings.STUDIO_TRAINING_DRAFT_MAX_AGE_HOURS = 24
    assert training_drafts_sweep_abandoned(now=timezone.now() + timedelta(hours=23)) == 0  # still fresh
    assert all(default_storage.exists(name) for name in files)
    assert training_drafts_sweep_abandoned(now=timezone.now() + timedelta(hours=25)) == 1
    assert not any(default_storage.exists(name) for name in files)
    response = client.get(reverse("generation:training_settings"))
    assert response.status_code == 302 and response["Location"] == reverse("generation:training_new")
    assert "training_draft" not in client.session


def draft_of_three(client):
    response = client.post(reverse("generation:training_new"), {
        "instance_prompt": "a photo of zwx dog", "images": [upload(), upload("b.png"), upload("c.png")]})
    assert response.status_code == 302


def settings_data(**overrides) -> dict:
    data = {"name": "zwx-dog", "instance_prompt": "a photo of zwx dog", "method": "lora", "preset": "quick",
            "caption_0": "a photo of zwx dog", "caption_1": "a photo of zwx dog on grass",
            "caption_2": "a photo of zwx dog", "prior_preservation": "on", "num_class_images": "20"}
    data.update(overrides)
    return data


@pytest.mark.parametrize(("overrides", "message"), [
    ({"rank": "500"}, "less than or equal to 128"),
    ({"steps": "3"}, "greater than or equal to 10"),
    ({"resolution": "100"}, "multiple of 8"),
    ({"name": "two words"}, "A LoRA name is"),
    ({"caption_1": ""}, "Every picture needs a caption."),
    ({"method": "dreambooth", "instance_token": ""}, "DreamBooth needs one rare word"),
    ({"method": "dreambooth", "instance_token": "sks"}, "must contain the instance token"),
    ({"method": "dreambooth", "instance_token": "zwx", "class_prompt": ""},
     "Prior preservation needs a class prompt"),
    ({"method": "dreambooth", "instance_token": "zwx", "class_prompt": "a dog\na zwx dog"},
     "class prompt 2 must not contain the instance token"),
    ({"method": "dreambooth", "instance_token": "zwx", "class_prompt": "a dog\n" + "x" * 301},
     "Class prompt 2 is over 300 characters"),
    ({"method": "dreambooth", "instance_token": "zwx", "class_prompt": "\n".join(["a dog"] * 51)},
     "51 class prompts: give at most 50"),
    ({"method": "dreambooth", "instance_token": "zwx", "class_prompt": "a dog\na cat\na fox",
      "num_class_images": "2"}, "2 class images cannot cover 3 class prompts"),
    ({"method": "dreambooth", "instance_token": "zwx", "class_prompt": "a dog", "prior_loss_weight": "11"},
     "less than or equal to 10"),
])
def test_step_two_bad_settings_are_form_errors_and_nothing_is_charged(client, overrides, message):
    user = signed_in(client, credits=100)
    draft_of_three(client)
    response = client.post(reverse("generation:training_settings"), settings_data(**overrides))
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Job.objects.filter(user=user, kind=JobKind.TRAIN).exists()


def test_step_two_starts_the_training_with_the_captions_and_the_quoted_cost(client):
    from billing.selectors import wallet_balance

    user = signed_in(client, credits=500)
    draft_of_three(client)
    draft_files = [item["file"] for item in client.session["training_draft"]["images"]]
    quote = client.get(reverse("generation:training_quote"),
                       {"method": "lora", "preset": "quick", "steps": "12", "resolution": "64"}).content.decode()
    cost = int(re.search(r'data-cost="(\d+)"', quote).group(1))
    assert "you have 500" in quote
    response = client.post(reverse("generation:training_settings"), settings_data(steps="12", resolution="64"))
    job = Job.objects.get(user=user, kind=JobKind.TRAIN)
    assert response.status_code == 302 and response["Location"] == page_url(job)
    assert (job.steps, job.width, job.cost, job.prompt) == (12, 64, cost, "a photo of zwx dog")
    training = job.training
    assert (training.name, training.rank, training.preset, training.sample_every, training.checkpoint_every) == (
        "zwx-dog", 4, "quick", 3, 3)
    assert (training.lora_targets, training.train_token_embeddings) == ("attention", False)  # LoRA's defaults
    assert [image.caption for image in training.images.all()][1] == "a photo of zwx dog on grass"
    assert wallet_balance(user=user)[0] == 500 - cost
    assert "training_draft" not in client.session
    assert not any(default_storage.exists(name) for name in draft_files)

    draft_of_three(client)  # the name is taken now: a form error, nothing more charged
    response = client.post(reverse("generation:training_settings"), settings_data(steps="12", resolution="64"))
    assert response.status_code in (400, 409) and "zwx-dog" in response.content.decode()
    assert Job.objects.filter(user=user, kind=JobKind.TRAIN).count() == 1
    assert wallet_balance(user=user)[0] == 500 - cost


def test_step_two_starts_a_dreambooth_training_with_prior_preservation(client):
    user = signed_in(client, credits=5000)
    draft_of_three(client)
    response = client.post(reverse("generation:training_settings"), settings_data(
        method="dreambooth", instance_token="zwx", class_prompt="a photo of a dog", num_class_images="5",
        steps="12", resolution="64"))
    assert response.status_code == 302
    training = Training.objects.get(job__user=user)
    assert (training.method, training.instance_token, training.class_prompt, training.prior_preservation,
            training.num_class_images) == ("dreambooth", "zwx", "a photo of a dog", True, 5)


def test_several_class_prompts_one_per_line_and_the_prior_weight_reach_the_trainer(client):
    user = signed_in(client, credits=5000)
    draft_of_three(client)
    response = client.post(reverse("generation:training_settings"), settings_data(
        method="dreambooth", instance_token="zwx", class_prompt=" a photo of a dog\r\n\r\na photo of a cat \n",
        prior_loss_weight="2", num_class_images="4", steps="12", resolution="64"))
    assert response.status_code == 302
    training = Training.objects.get(job__user=user)
    assert (training.class_prompt, training.class_prompts, training.prior_loss_weight) == (
        "a photo of a dog", ["a photo of a dog", "a photo of a cat"], 2.0)
    spec = services.training_spec(training.job)
    assert (spec.class_prompts, spec.prior_loss_weight, spec.num_class_images) == (
        ("a photo of a dog", "a photo of a cat"), 2.0, 4)
    # DreamBooth's trainer defaults, fixed at submit so a later change of them cannot break a resume
    assert (training.lora_targets, training.train_token_embeddings) == ("all", True)
    assert (spec.lora_targets, spec.train_token_embeddings) == ("all", True)


def test_one_class_prompt_keeps_the_default_prior_weight(client):
    from generation.engine.training.spec import TrainingSpec

    user = signed_in(client, credits=5000)
    draft_of_three(client)
    client.post(reverse("generation:training_settings"), settings_data(
        method="dreambooth", instance_token="zwx", class_prompt="a photo of a dog", steps="12", resolution="64"))
    training = Training.objects.get(job__user=user)
    assert (training.class_prompts, training.prior_loss_weight) == ([], TrainingSpec.prior_loss_weight)
    assert services.training_spec(training.job).class_prompts == ()


def test_step_two_without_enough_credits_says_so_with_402(client):
    user = signed_in(client, credits=0)
    draft_of_three(client)
    response = client.post(reverse("generation:training_settings"), settings_data())
    assert response.status_code == 402 and "Buy more credits" in response.content.decode()
    assert not Job.objects.filter(user=user).exists()


def test_the_full_fine_tune_box_is_only_for_users_allowed_it(client):
    from django.contrib.auth.models import Permission

    user = signed_in(client)
    user.user_permissions.add(Permission.objects.get(codename="train_full_model"))
    draft_of_three(client)
    assert 'name="full_finetune"' in client.get(reverse("generation:training_settings")).content.decode()


# --- A training's page ---------------------------------------------------------------------------

def make_training(user, *, state=JobState.RUNNING, losses=(), samples=(), steps=20) -> Job:
    """A training job as the worker leaves it (rows written directly: the page only reads them)."""
    job = submit_job(user)
    Job.objects.filter(pk=job.pk).update(kind=JobKind.TRAIN, steps=steps, state=state, prompt="a photo of zwx dog",
                                         progress_step=len(losses))
    files = []
    for step in samples:
        files.append({"step": step, "files": [default_storage.save(f"training/{job.pk}/s{step}.png",
                                                                   ContentFile(png((step, 0, 0), 32)))]})
    training = Training.objects.create(job=job, name="zwx-dog", preset="quick", rank=4, losses=list(losses),
                                       samples=files, sample_every=5)
    TrainingImage.objects.create(training=training, index=0, caption="a photo of zwx dog",
                                 file=default_storage.save(f"training/{job.pk}/0.png", ContentFile(png())))
    return Job.objects.get(pk=job.pk)


def test_training_page_shows_progress_loss_curve_and_samples_to_its_owner_only(client):
    owner = signed_in(client, credits=100)
    job = make_training(owner, losses=[[1, 0.5], [2, 0.25], [3, 0.3]], samples=[5])
    page = client.get(reverse("generation:training_detail", args=[job.pk])).content.decode()
    assert "zwx-dog" in page and "Step <span data-training-step>3</span> of 20" in page
    assert "loss 0.3000" in page  # the last loss, from the database
    points = re.search(r'data-loss-line points="([^"]+)"', page).group(1).split()
    # x: steps 1-3 of 20 across 6..594; y: the highest loss at the top (6), the lowest at the bottom (174).
    assert points == ["35.4,6.0", "64.8,174.0", "94.2,140.4"]
    assert f'ws-connect="/ws/jobs/{job.pk}/"' in page
    sample_url = reverse("generation:training_sample", args=[job.pk, 5, 0])
    assert sample_url in page
    assert client.get(sample_url)["Content-Type"] == "image/png"
    assert client.get(reverse("generation:training_sample", args=[job.pk, 6, 0])).status_code == 404
    assert client.get(reverse("generation:training_image", args=[job.pk, 0])).status_code == 200
    # The job's generic page sends a training to its own page; Create's history leaves it out.
    assert client.get(reverse("generation:job_detail", args=[job.pk]))["Location"] == page_url(job)
    assert job.pk not in [listed.pk for listed in selectors.jobs_for_user(owner)]

    signed_in(client)  # someone else
    for url in (page_url(job), sample_url, reverse("generation:training_image", args=[job.pk, 0]),
                reverse("generation:training_panel", args=[job.pk])):
        assert client.get(url).status_code == 404
    assert client.post(reverse("generation:training_cancel", args=[job.pk])).status_code == 404


def page_url(job) -> str:
    return reverse("generation:training_detail", args=[job.pk])


def test_cancelling_a_queued_training_releases_it_and_the_page_says_no_lora_was_kept(client):
    owner = signed_in(client, credits=100)
    job = make_training(owner, state=JobState.QUEUED)
    response = client.post(reverse("generation:training_cancel", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    page = client.get(page_url(job)).content.decode()
    assert "no LoRA was kept" in page and f"/ws/jobs/{job.pk}/" not in page


def test_a_finished_training_links_its_lora_and_the_trainings_list_shows_it(client):
    owner = signed_in(client, credits=100)
    job = make_training(owner, state=JobState.SUCCEEDED, losses=[[1, 0.4], [2, 0.2]])
    lora = services.lora_create_from_bytes(owner=owner, name="zwx-dog", data=b"lora", source=LoRASource.TRAINED,
                                           base_model="studio-tiny", training=job.training, rank=4, steps=20)
    page = client.get(page_url(job)).content.decode()
    assert reverse("generation:lora_detail", args=[lora.pk]) in page and "Your LoRA is ready" in page
    listing = client.get(reverse("generation:trainings")).content.decode()
    assert page_url(job) in listing and "Succeeded" in listing


# --- The LoRA library ----------------------------------------------------------------------------

def safetensors(tensors: dict[str, list[int]]) -> bytes:
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = math.prod(shape) * 2
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"\0" * offset


def fitting_lora(rank=2) -> bytes:
    """A kohya LoRA on one attention projection of the model the tests serve."""
    unet = model_modules(selectors.model_path())["unet"]
    module, (outputs, inputs) = next((name, shape) for name, shape in sorted(unet.items())
                                     if name.endswith("attn1.to_q") and len(shape) == 2)
    kohya = "lora_unet_" + module.replace(".", "_")
    return safetensors({f"{kohya}.lora_down.weight": [rank, inputs], f"{kohya}.lora_up.weight": [outputs, rank]})


def import_lora(client, name="style", data=None, filename="style.safetensors"):
    return client.post(reverse("generation:lora_import"), {
        "name": name, "lora_file": SimpleUploadedFile(filename, data if data is not None else fitting_lora())})


def test_import_a_fitting_lora_and_see_it_listed(client):
    owner = signed_in(client)
    response = import_lora(client)
    lora = LoRA.objects.get(owner=owner)
    assert response.status_code == 302
    assert response["Location"] == reverse("generation:lora_detail", args=[lora.pk])
    assert (lora.source, lora.rank, lora.name) == (LoRASource.IMPORTED, 2, "style")
    listing = client.get(reverse("generation:loras")).content.decode()
    assert lora.short_hash in listing and "Imported" in listing and 'data-lora="style"' in listing


@pytest.mark.parametrize(("filename", "data", "status", "message"), [
    ("model.ckpt", b"PK\x03\x04" + b"\0" * 200, 400, "pickle"),
    ("style.safetensors", b"\x80\x04\x95" + b"\0" * 200, 400, "pickle"),
    ("style.safetensors", b"not a safetensors file at all", 400, ""),
])
def test_import_refuses_pickles_and_broken_files_with_a_message(client, filename, data, status, message):
    owner = signed_in(client)
    response = import_lora(client, data=data, filename=filename)
    assert response.status_code == status
    assert 'class="errorlist' in response.content.decode()
    assert message.lower() in response.content.decode().lower()
    assert not LoRA.objects.filter(owner=owner).exists()


def test_import_refuses_a_file_over_the_lora_limit_with_413(client, settings):
    settings.STUDIO_LORA_MAX_BYTES = 2048  # the upload handler cuts the file one byte past it
    owner = signed_in(client)
    response = import_lora(client, data=fitting_lora(rank=64))
    assert response.status_code == 413 and "The file is larger than 2 KB." in response.content.decode()
    assert not LoRA.objects.filter(owner=owner).exists()


def test_import_refuses_a_lora_for_another_model_and_a_taken_name(client):
    owner = signed_in(client)
    sdxl = safetensors({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": [4, 2048],
                        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight": [640, 4]})
    response = import_lora(client, data=sdxl)
    assert response.status_code == 400 and 'class="errorlist' in response.content.decode()
    assert import_lora(client).status_code == 302
    response = import_lora(client)
    assert response.status_code == 409 and "already have a LoRA called" in response.content.decode()
    assert LoRA.objects.filter(owner=owner).count() == 1


def lora_of(owner, name="zwx-dog") -> LoRA:
    return services.lora_create_from_bytes(owner=owner, name=name, data=b"lora bytes", source=LoRASource.TRAINED,
                                           base_model="studio-tiny", rank=4, steps=20, trigger_words="zwx")


def test_download_is_an_attachment_for_the_owner_and_members_only_when_allowed(client):
    owner, member, stranger = make_user(), make_user(), make_user()
    team = services.team_create(user=owner, name="Team")
    Membership.objects.create(team=team, user=member, role=TeamRole.MEMBER)
    lora = lora_of(owner)
    url = reverse("generation:lora_download", args=[lora.pk])
    client.force_login(owner)
    response = client.get(url)
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"lora bytes"
    assert response["Content-Disposition"] == 'attachment; filename="zwx-dog.safetensors"'

    client.force_login(owner)
    assert client.post(reverse("generation:lora_share", args=[lora.pk]), {"team": str(team.pk)}).status_code == 302
    client.force_login(member)
    page = client.get(reverse("generation:loras")).content.decode()
    assert "Shared with my teams" in page and "zwx-dog" in page and url not in page
    assert client.get(url).status_code == 403
    client.force_login(owner)
    client.post(reverse("generation:lora_share", args=[lora.pk]), {"team": str(team.pk), "allow_download": "on"})
    client.force_login(member)
    assert client.get(url).status_code == 200
    client.force_login(stranger)
    assert client.get(url).status_code == 404
    assert client.get(reverse("generation:lora_detail", args=[lora.pk])).status_code == 404


def test_rename_unshare_and_delete_through_the_pages(client):
    owner = signed_in(client)
    team = services.team_create(user=owner, name="Team")
    lora, other = lora_of(owner), lora_of(owner, name="taken")
    response = client.post(reverse("generation:lora_rename", args=[lora.pk]), {"name": "taken"})
    assert response.status_code == 409 and "already have a LoRA called" in response.content.decode()
    response = client.post(reverse("generation:lora_rename", args=[lora.pk]), {"name": "bad name!"})
    assert response.status_code == 400 and "A LoRA name is" in response.content.decode()
    assert client.post(reverse("generation:lora_rename", args=[lora.pk]), {"name": "zwx-cat"}).status_code == 302
    lora.refresh_from_db()
    assert lora.name == "zwx-cat"

    client.post(reverse("generation:lora_share", args=[lora.pk]), {"team": str(team.pk)})
    assert client.post(reverse("generation:lora_unshare", args=[lora.pk])).status_code == 302
    lora.refresh_from_db()
    assert lora.team_id is None

    confirm = client.get(reverse("generation:lora_delete", args=[lora.pk]))
    assert confirm.status_code == 200 and "Delete zwx-cat?" in confirm.content.decode()
    assert LoRA.objects.filter(pk=lora.pk).exists()  # a GET only asks
    job = submit_job(make_user(credits=50))
    Job.objects.filter(pk=job.pk).update(loras=[{"id": str(other.pk), "name": "taken", "sha256": "", "weight": 1}])
    response = client.post(reverse("generation:lora_delete", args=[other.pk]), {"confirm": "yes"})
    assert response.status_code == 409 and "uses this LoRA" in response.content.decode()
    response = client.post(reverse("generation:lora_delete", args=[lora.pk]), {"confirm": "yes"})
    assert response.status_code == 302 and not LoRA.objects.filter(pk=lora.pk).exists()


def test_a_member_cannot_change_a_shared_lora(client):
    owner, member = make_user(), make_user()
    team = services.team_create(user=owner, name="Team")
    Membership.objects.create(team=team, user=member, role=TeamRole.MEMBER)
    lora = services.lora_share_with_team(user=owner, lora=lora_of(owner), team_id=team.pk)
    client.force_login(member)
    page = client.get(reverse("generation:lora_detail", args=[lora.pk])).content.decode()
    assert "data-rename" not in page and "data-delete" not in page and "data-use-lora" in page
    assert client.post(reverse("generation:lora_rename", args=[lora.pk]), {"name": "mine"}).status_code == 403
    assert client.post(reverse("generation:lora_delete", args=[lora.pk]), {"confirm": "yes"}).status_code == 403
    assert client.post(reverse("generation:lora_unshare", args=[lora.pk])).status_code == 403


def test_the_header_links_the_lora_library(client):
    signed_in(client)
    page = client.get(reverse("generation:loras")).content.decode()
    assert re.search(r'href="/loras/" aria-current="page">LoRAs</a>', page)
