"""The Create form and the pages around a job: validation, permissions, serving images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from generation import services
from generation.models import Job, JobState
from tests.factories import make_user, submit_job

pytestmark = pytest.mark.django_db

VALID = {
    "prompt": "a red circle", "negative_prompt": "", "aspect": "1:1", "width": "", "height": "",
    "steps": "4", "guidance_scale": "7", "sampler": "euler_a", "seed": "", "num_images": "1",
}


def post_create(client, htmx=False, **changes):
    data = {**VALID, **changes}
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    return client.post(reverse("generation:create"), data, **headers)


def test_create_page_needs_login(client):
    response = client.get(reverse("generation:create"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_create_page_renders_the_form_with_every_sampler_and_aspect(client_with_credits):
    html = client_with_credits.get(reverse("generation:create")).content.decode()
    for label in ["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "UniPC"]:
        assert f">{label}</option>" in html
    for aspect in ["1:1", "3:2", "2:3", "16:9", "9:16"]:
        assert f'value="{aspect}"' in html


def test_create_form_starts_from_the_models_suggested_settings(client_with_credits, settings, tmp_path):
    source = Path(settings.STUDIO_MODEL_PATH)
    tuned = shutil.copytree(source, tmp_path / "tuned", ignore=shutil.ignore_patterns("studio_hash.json"))
    studio = json.loads((tuned / "studio_model.json").read_text())
    studio.update(default_steps=12, default_guidance_scale=2.5, default_sampler="dpmpp_2m")
    (tuned / "studio_model.json").write_text(json.dumps(studio))
    settings.STUDIO_MODEL_PATH = str(tuned)
    html = client_with_credits.get(reverse("generation:create")).content.decode()
    assert 'name="guidance_scale" value="2.5"' in html
    assert 'name="steps" value="12"' in html
    assert '<option value="dpmpp_2m" selected>' in html


def test_valid_post_creates_a_job_with_a_random_seed_and_redirects(client_with_credits):
    response = post_create(client_with_credits)
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("generation:job_detail", args=[job.pk])
    assert job.state == JobState.QUEUED and 0 <= job.seed < 2**32
    assert (job.width, job.height) == (512, 512)


def test_aspect_ratios_use_the_native_short_side(client_with_credits):
    post_create(client_with_credits, aspect="16:9")
    post_create(client_with_credits, aspect="2:3")
    sizes = sorted(Job.objects.values_list("width", "height"))
    assert sizes == [(512, 768), (912, 512)]


def test_htmx_post_returns_the_live_job_panel(client_with_credits):
    response = post_create(client_with_credits, htmx=True, seed="123")
    job = Job.objects.get()
    assert response.status_code == 201
    html = response.content.decode()
    assert f'ws-connect="/ws/jobs/{job.pk}/"' in html and "seed 123" in html


@pytest.mark.parametrize(
    "changes, field, message",
    [
        ({"width": "2048", "height": "512"}, "width", "maximum"),
        ({"width": "500", "height": "512"}, "width", "multiple of 8"),
        ({"steps": "0"}, "steps", ""),
        ({"steps": "151"}, "steps", ""),
        ({"guidance_scale": "31"}, "guidance_scale", ""),
        ({"guidance_scale": "-1"}, "guidance_scale", ""),
        ({"num_images": "5"}, "num_images", ""),
        ({"num_images": "0"}, "num_images", ""),
        ({"prompt": "x" * 1001}, "prompt", "1000"),
        ({"prompt": ""}, "prompt", "required"),
        ({"sampler": "magic"}, "sampler", "valid choice"),
        ({"seed": "-5"}, "seed", ""),
        ({"width": "512"}, None, "both width and height"),
        ({"steps": "lots"}, "steps", "whole number"),
    ],
)
def test_bad_input_gets_a_clear_message_a_400_and_no_job(client_with_credits, changes, field, message):
    response = post_create(client_with_credits, **changes)
    assert response.status_code == 400
    form = response.context["form"]
    errors = form.errors.get(field or "__all__")
    assert errors, form.errors
    assert message.lower() in " ".join(errors).lower()
    assert Job.objects.count() == 0


def test_bad_input_over_htmx_swaps_the_form_back_with_errors(client_with_credits):
    response = post_create(client_with_credits, htmx=True, steps="999")
    assert response.status_code == 400
    assert response["HX-Retarget"] == "#create-form" and response["HX-Reswap"] == "outerHTML"
    assert 'id="create-form"' in response.content.decode() and "errorlist" in response.content.decode()


def test_not_enough_credits_is_a_402_with_a_link_to_buy(client):
    user = make_user(credits=1)
    client.force_login(user)
    response = post_create(client, num_images="4", steps="150")
    assert response.status_code == 402
    html = response.content.decode()
    assert "Not enough credits" in html and reverse("billing:packs") in html
    assert Job.objects.count() == 0


def test_reuse_settings_prefills_the_form(client_with_credits):
    job = submit_job(client_with_credits.user, prompt="a green star", seed=99, steps=12)
    html = client_with_credits.get(reverse("generation:create") + f"?from={job.pk}&seed=99").content.decode()
    assert "a green star" in html and 'value="99"' in html and 'value="12"' in html


def test_reuse_picks_the_aspect_ratio_when_the_size_is_one(client_with_credits):
    wide = submit_job(client_with_credits.user, width=912, height=512)
    odd = submit_job(client_with_credits.user, width=640, height=320)
    response = client_with_credits.get(reverse("generation:create") + f"?from={wide.pk}")
    assert 'value="16:9" id="id_aspect_3" checked>' in response.content.decode()
    form = response.context["form"]
    assert form.initial["aspect"] == "16:9" and "width" not in form.initial
    form = client_with_credits.get(reverse("generation:create") + f"?from={odd.pk}").context["form"]
    assert (form.initial["width"], form.initial["height"]) == (640, 320) and "aspect" not in form.initial


def make_finished_job(user):
    job = submit_job(user)
    lease = services.job_claim_next(worker_id="w")
    name = default_storage.save(f"images/{user.pk}/{job.pk}/0.png", ContentFile(b"\x89PNG fake"))
    thumb = default_storage.save(f"images/{user.pk}/{job.pk}/0.webp", ContentFile(b"RIFF fake"))
    services.job_succeed(
        lease=lease, engine_seconds=1,
        images=[services.StoredImage(index=0, seed=42, width=64, height=64, file_name=name, thumbnail_name=thumb, infotext="x")],
    )
    job.refresh_from_db()
    return job, job.images.get()


def test_owner_sees_job_image_and_download(client_with_credits):
    job, image = make_finished_job(client_with_credits.user)
    assert client_with_credits.get(reverse("generation:job_detail", args=[job.pk])).status_code == 200
    assert client_with_credits.get(reverse("generation:image_detail", args=[image.pk])).status_code == 200
    response = client_with_credits.get(reverse("generation:image_file", args=[image.pk]) + "?download=1")
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"\x89PNG fake"
    assert "attachment" in response["Content-Disposition"]


def test_another_user_gets_404_for_everything(client):
    owner = make_user(credits=100)
    job, image = make_finished_job(owner)
    client.force_login(make_user(credits=100))
    for url in [
        reverse("generation:job_detail", args=[job.pk]),
        reverse("generation:job_panel", args=[job.pk]),
        reverse("generation:image_detail", args=[image.pk]),
        reverse("generation:image_file", args=[image.pk]),
        reverse("generation:image_thumbnail", args=[image.pk]),
    ]:
        assert client.get(url).status_code == 404, url
    assert client.post(reverse("generation:job_cancel", args=[job.pk])).status_code == 404
    assert client.get(reverse("generation:create") + f"?from={job.pk}").content.decode().count(job.prompt) == 0


def test_anonymous_users_cannot_fetch_images(client):
    job, image = make_finished_job(make_user(credits=100))
    response = client.get(reverse("generation:image_file", args=[image.pk]))
    assert response.status_code == 302


def test_cancel_view_cancels_a_queued_job(client_with_credits):
    job = submit_job(client_with_credits.user)
    response = client_with_credits.post(reverse("generation:job_cancel", args=[job.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "Cancelled" in response.content.decode()
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
