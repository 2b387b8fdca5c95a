"""A full fine-tune becomes a private model variant (docs/fine-tuning.md, "Full fine-tune"): the real
trainer on the tiny test model, the worker storing its folder, the registry offering it to its
owner only, and a job running on it."""

from __future__ import annotations

import pytest
import torch
from django.contrib.auth.models import Permission
from django.core.files.storage import default_storage
from django.urls import reverse

from generation import selectors, services, worker
from generation.models import Job, JobKind, JobState, SDModel
from tests.factories import job_params, make_user
from tests.generation.test_training_services import pictures

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _one_thread(settings):
    torch.set_num_threads(1)
    settings.STUDIO_TORCH_THREADS = 1


def allowed_user(credits=500):
    user = make_user(credits=credits)
    user.user_permissions.add(Permission.objects.get(codename="train_full_model"))
    return type(user).objects.get(pk=user.pk)  # a fresh copy: permissions are cached per instance


def full_fine_tune(user, name="my-variant"):
    return services.training_submit(user=user, name=name, images=pictures(), spec_fields={
        "method": "lora", "preset": "quick", "steps": 10, "rank": 4, "learning_rate": 1e-4, "resolution": 64,
        "checkpoint_every": 0, "sample_every": 0, "full_finetune": True})


def test_a_full_fine_tune_becomes_a_model_only_its_owner_can_pick_and_run(client):
    owner, other = allowed_user(), make_user(credits=100)
    training = full_fine_tune(owner)
    lease = services.job_claim_next(worker_id="trainer", kinds=(JobKind.TRAIN,))
    worker.run_training(lease, run_generation_in_pauses=False)
    job = Job.objects.get(pk=training.pk)
    assert job.state == JobState.SUCCEEDED, job.error
    variant = SDModel.objects.get(owner=owner)
    assert variant.title == "my-variant" and variant.storage_folder and not variant.path
    assert default_storage.exists(f"{variant.storage_folder}/unet/diffusion_pytorch_model.safetensors")
    assert variant.hash and variant.hash != services.builtin_model().hash  # its own trained weights

    assert variant in selectors.models_offered(owner) and variant not in selectors.models_offered(other)
    assert variant not in selectors.models_offered()  # not the studio's
    with pytest.raises(services.ModelNotUsable):
        services.job_submit(user=other, **job_params(), model=variant)

    generation = services.job_submit(user=owner, **job_params(steps=2), model=variant)
    worker.run_job(services.job_claim_next(worker_id="gpu"))
    generation.refresh_from_db()
    assert generation.state == JobState.SUCCEEDED and generation.model == variant, generation.error

    client.force_login(owner)
    page = client.get(reverse("generation:training_detail", args=[job.pk])).content.decode()
    assert "Your model is ready: my-variant" in page and f"?model={variant.name}" in page
    create = client.get(f"{reverse('generation:create')}?model={variant.name}").content.decode()
    assert f'<option value="{variant.name}"' in create
    client.force_login(other)
    create = client.get(reverse("generation:create")).content.decode()
    assert variant.name not in create
    client.force_login(make_user(staff=True))
    models_page = client.get(reverse("generation:staff_models")).content.decode()
    assert f"private: {owner.email}" in models_page and variant.storage_folder in models_page
