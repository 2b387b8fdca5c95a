"""A Create job with a LoRA, end to end through the worker and the real engine on the tiny test
model: its picture differs from the same job's without, and its PNG parameters carry the tag and
A1111's "Lora hashes"; the PNG's parameters bring the tag back on Create."""

from __future__ import annotations

import io

import pytest
import torch
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from generation import selectors, services, worker
from generation.engine.lora_format import kohya_from_peft
from generation.models import Image, Job, JobState, LoRASource
from generation.png_info import png_info_from_text
from generation.selectors import model_path
from tests.engine.test_lora import peft_states
from tests.factories import job_params, make_user

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _one_thread(settings):
    torch.set_num_threads(1)
    settings.STUDIO_TORCH_THREADS = 1


def run(job) -> Job:
    lease = services.job_claim_next(worker_id="test-worker")
    assert lease is not None and lease.job_id == job.pk
    worker.run_job(lease)
    job.refresh_from_db()
    return job


def picture(job) -> tuple[bytes, str]:
    image = Image.objects.get(job=job)
    with default_storage.open(image.file.name, "rb") as handle:
        png = handle.read()
    return PILImage.open(io.BytesIO(png)).tobytes(), PILImage.open(io.BytesIO(png)).text["parameters"]


def test_a_job_with_a_lora_differs_from_the_same_job_without_and_its_png_names_the_lora():
    user = make_user(credits=500)
    unet, te = peft_states(model_path(), rank=4, seed=1, scale=0.3)
    lora = services.lora_create_from_bytes(owner=user, name="zwx-test", data=kohya_from_peft(unet, te, alpha=2.0),
                                           source=LoRASource.IMPORTED, base_model="studio-tiny")
    params = job_params(width=64, height=64, steps=2, sampler="euler", seed=7)
    plain = run(services.job_submit(user=user, **params))
    with_lora = run(services.job_submit(user=user, **{**params, "prompt": "a red circle <lora:zwx-test:0.9>"},
                                        loras=[services.LoraChoice(lora, 0.9)]))
    assert (plain.state, with_lora.state) == (JobState.SUCCEEDED, JobState.SUCCEEDED), with_lora.error
    assert plain.cost == with_lora.cost  # a LoRA does not change the price
    plain_pixels, _ = picture(plain)
    lora_pixels, parameters = picture(with_lora)
    assert plain_pixels != lora_pixels
    assert parameters.startswith("a red circle <lora:zwx-test:0.9>\n")
    assert f'Lora hashes: "zwx-test: {lora.sha256[:12]}"' in parameters
    # PNG info on Create: the tag comes back in the prompt and is recognised as my LoRA
    found = png_info_from_text({"parameters": parameters}, selectors.model_info(), loras=[lora])
    assert found.fields["prompt"] == "a red circle <lora:zwx-test:0.9>"
    assert ("LoRA", "zwx-test (0.9)") in found.used
    assert "Lora hashes" not in [item.label for item in found.unused]
    stranger = png_info_from_text({"parameters": parameters}, selectors.model_info(), loras=[])
    assert any(item.label == "LoRA" and "no LoRA called zwx-test" in item.reason for item in stranger.unused)


def test_a_job_whose_lora_was_deleted_before_it_ran_fails_clearly_with_its_credits_released():
    user = make_user(credits=500)
    lora = services.lora_create_from_bytes(owner=user, name="gone", data=b"x", source=LoRASource.IMPORTED,
                                           base_model="studio-tiny")
    job = services.job_submit(user=user, **job_params(width=64, height=64, steps=1),
                              loras=[services.LoraChoice(lora, 1.0)])
    type(lora).objects.filter(pk=lora.pk).delete()  # as if deleted behind the service's back
    job = run(job)
    assert job.state == JobState.FAILED and "The LoRA gone was deleted" in job.error
    from billing import selectors as billing_selectors

    assert not billing_selectors.subject_has_open_hold(subject=job.billing_subject)
