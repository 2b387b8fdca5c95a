"""Hostile query strings and form bodies get a clear 4xx or are ignored, never a 500."""

from __future__ import annotations

import logging

import pytest
from channels.testing import WebsocketCommunicator
from django.urls import reverse

from generation.models import Job
from studio.asgi import application
from tests.factories import submit_job

FORM = {
    "prompt": "a red circle", "negative_prompt": "", "aspect": "1:1", "width": "", "height": "",
    "steps": "4", "guidance_scale": "7", "sampler": "euler_a", "seed": "1", "num_images": "1",
}


@pytest.mark.django_db
@pytest.mark.parametrize("seed", ["²", "٣", "9" * 5000, "-1", "1e3", "99999999999999999999", "%00", "\x00"])
def test_reuse_with_a_hostile_seed_opens_the_form_without_that_seed(client_with_credits, seed):
    job = submit_job(client_with_credits.user)
    response = client_with_credits.get(reverse("generation:create"), {"from": str(job.pk), "seed": seed})
    assert response.status_code == 200
    form = response.context["form"]
    assert form.initial["prompt"] == job.prompt  # the job's settings are still reused
    assert "seed" not in form.initial


@pytest.mark.django_db
def test_reuse_with_a_plain_seed_keeps_it(client_with_credits):
    job = submit_job(client_with_credits.user)
    response = client_with_credits.get(reverse("generation:create"), {"from": str(job.pk), "seed": "1234"})
    assert response.status_code == 200 and response.context["form"].initial["seed"] == 1234


@pytest.mark.django_db
@pytest.mark.parametrize("job_id", ["²", "\x00", "9" * 5000, "not-a-uuid"])
def test_reuse_of_a_hostile_job_id_opens_an_empty_form(client_with_credits, job_id):
    response = client_with_credits.get(reverse("generation:create"), {"from": job_id, "seed": "5"})
    assert response.status_code == 200 and response.context["form"].initial == {}


@pytest.mark.django_db
@pytest.mark.parametrize("seed", ["²", "9" * 5000])
def test_create_with_a_hostile_seed_is_a_400(client_with_credits, seed):
    response = client_with_credits.post(reverse("generation:create"), {**FORM, "seed": seed})
    assert response.status_code == 400 and not Job.objects.exists()


@pytest.mark.django_db
def test_a_plain_form_post_with_crlf_line_breaks_creates_the_job(client_with_credits):
    """Browsers send textarea line breaks as CRLF in a plain (non-htmx) form post."""
    prompt = "a red circle\r\non a blue background\rwith a star"
    response = client_with_credits.post(reverse("generation:create"), {**FORM, "prompt": prompt,
                                                                "negative_prompt": "green\r\nyellow"})
    assert response.status_code == 302, response.content.decode()[:2000]
    job = Job.objects.get()
    assert job.prompt == "a red circle\non a blue background\nwith a star"
    assert job.negative_prompt == "green\nyellow"


@pytest.mark.django_db
@pytest.mark.parametrize("prompt", ["a red\x1bcircle", "a red\x7fcircle", "a\r\n\x08circle"])
def test_a_plain_form_post_with_control_characters_is_still_refused(client_with_credits, prompt):
    response = client_with_credits.post(reverse("generation:create"), {**FORM, "prompt": prompt})
    assert response.status_code == 400 and not Job.objects.exists()
    assert "control characters" in response.content.decode()


@pytest.mark.django_db
def test_a_prompt_with_a_nul_character_is_refused(client_with_credits):
    response = client_with_credits.post(reverse("generation:create"), {**FORM, "prompt": "a red\x00circle"})
    assert response.status_code == 400 and not Job.objects.exists()
    assert "prompt" in response.context["form"].errors


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/ws/nothing/", "/ws/jobs/not-a-uuid/", "/elsewhere", "/ws/wallet/extra/"])
async def test_an_unknown_websocket_path_closes_cleanly_without_a_traceback(path, caplog):
    communicator = WebsocketCommunicator(
        application, path, headers=[(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:8000")]
    )
    with caplog.at_level(logging.DEBUG):
        connected, code = await communicator.connect()
        await communicator.disconnect()
    assert not connected and code == 4404
    assert not [record for record in caplog.records if record.exc_info or record.levelno >= logging.ERROR]
