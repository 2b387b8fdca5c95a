"""A training's websocket on the real Redis channel layer: its state as the training's own
fragments, each step's progress with a point of the loss curve, new samples from the database."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from generation import events
from generation.models import Training
from tests.generation.test_consumers import connect
from tests.generation.test_training_pages import make_training, make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def test_a_training_socket_sends_its_state_progress_with_loss_points_and_samples():
    owner = await sync_to_async(make_user)(credits=100)
    job = await sync_to_async(make_training)(owner, losses=[[1, 0.5]])
    communicator, connected, _ = await connect(job, owner)
    assert connected
    state = await communicator.receive_from()
    assert f'id="job-head-{job.pk}" hx-swap-oob="true"' in state
    assert "LoRA · quick · 20 steps · rank 4" in state and f'id="job-progress-{job.pk}"' in state
    assert "preview" not in state  # not the image job's fragments

    group = events.job_group(job.pk)
    progress = {"type": "training.progress", "job_id": str(job.pk), "step": 3, "total_steps": 20, "loss": 0.25,
                "elapsed": 1.5, "eta": 34.0, "phase": "train"}
    await sync_to_async(events.send_event)(group, progress)
    html = await communicator.receive_from()
    assert "Step <span data-training-step>3</span> of 20 · loss 0.2500 · about 34 s left" in html
    assert f'hx-swap-oob="beforeend:#loss-points-{job.pk}"><i data-step="3" data-loss="0.25"></i>' in html

    class_images = {**progress, "phase": "class_images", "step": 2, "total_steps": 10, "loss": 0.0}
    await sync_to_async(events.send_event)(group, class_images)
    html = await communicator.receive_from()
    assert "Drawing class images: 2 of 10" in html and 'data-step="0"' in html and "loss-points" not in html

    def add_sample():
        name = default_storage.save(f"training/{job.pk}/s5.png", ContentFile(b"png"))
        Training.objects.filter(pk=job.pk).update(samples=[{"step": 5, "files": [name]}])

    await sync_to_async(add_sample)()
    await sync_to_async(events.send_event)(group, {"type": "training.samples", "job_id": str(job.pk), "step": 5})
    html = await communicator.receive_from()
    assert f'id="training-samples-{job.pk}" data-training-samples hx-swap-oob="true"' in html
    assert reverse("generation:training_sample", args=[job.pk, 5, 0]) in html
    await communicator.disconnect()


async def test_a_stranger_cannot_watch_a_training():
    owner, stranger = await sync_to_async(make_user)(credits=100), await sync_to_async(make_user)()
    job = await sync_to_async(make_training)(owner)
    communicator, connected, code = await connect(job, stranger)
    await communicator.disconnect()
    assert not connected and code == 4404
