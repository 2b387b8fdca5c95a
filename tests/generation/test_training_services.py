"""Training jobs through generation.services: submit and its refusals, the price, the queue's kinds,
and the lease-fenced worker services settling the credits exactly once (cancel pro rata, sweeps,
requeues). The real trainer runs in tests/e2e/test_training_stack.py."""

from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from PIL import Image as PILImage

from billing.models import EntryKind, LedgerEntry, PriceSettings
from billing.pricing import training_price
from billing.selectors import wallet_balance
from billing.services import InsufficientCredits
from generation import selectors, services
from generation.engine.contracts import InvalidRequest
from generation.engine.training.spec import TrainingCheckpoint, TrainingResult
from generation.models import Job, JobKind, JobState, LoRA, Training
from generation.services.training import MAX_LOSS_POINTS, thin_losses
from tests.factories import make_user, submit_job

pytestmark = [pytest.mark.django_db(transaction=True)]


def png(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def pictures(count=3):
    return [services.TrainingImageInput(png=png((40 * i, 90, 200)), caption=f"a zwx shape {i}") for i in range(count)]


def submit(user, name="zwx-shape", images=None, **fields):
    spec_fields = {"method": "lora", "preset": "quick", "steps": 100, "rank": 4, "learning_rate": 1e-3,
                   "resolution": 512, "checkpoint_every": 25, "sample_every": 0, **fields}
    return services.training_submit(user=user, name=name, spec_fields=spec_fields,
                                    images=pictures() if images is None else images)


def stored_files(user, folder=None) -> list[str]:
    folder = folder or f"trainings/{user.pk}"
    if not default_storage.exists(folder):
        return []
    dirs, files = default_storage.listdir(folder)
    return [f"{folder}/{name}" for name in files] + [
        name for sub in dirs for name in stored_files(user, f"{folder}/{sub}")]


def ledger(job) -> list[tuple[str, int]]:
    return list(LedgerEntry.objects.filter(subject=job.billing_subject).order_by("created_at", "pk")
                .values_list("kind", "amount"))


def claim_training(worker="w1"):
    return services.job_claim_next(worker_id=worker, kinds=(JobKind.TRAIN,))


def checkpoint(step, lora=b"lora-bytes"):
    return TrainingCheckpoint(step=step, state=f"state-{step}".encode(), lora=lora + str(step).encode())


def expire(job):
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


# --- Price ----------------------------------------------------------------------------------------

def test_training_is_priced_like_generation_from_the_admin_settings():
    # Defaults: 4 credits for 512x512 x 30 steps; a training step is 3 generation steps.
    assert training_price(steps=100, resolution=512) == 40
    assert training_price(steps=100, resolution=512, train_text_encoder=True) == 50  # x 1.25
    assert training_price(steps=100, resolution=512, batch=2) == 80
    # 20 class images x 30 steps at 512 = 20 generated images = 80 credits more
    assert training_price(steps=100, resolution=512, class_images=20, class_image_steps=30) == 120
    assert training_price(steps=10, resolution=64) == 1  # rounded up once, never free
    prices = PriceSettings.load()
    prices.training_step_cost = Decimal("1.5")
    prices.save()
    assert training_price(steps=100, resolution=512) == 20
    with pytest.raises(ValueError):
        training_price(steps=0, resolution=512)
    with pytest.raises(ValueError):
        training_price(steps=10, resolution=512, class_images=3, class_image_steps=0)


def test_training_cost_reads_the_method_and_the_served_model():
    plain = services.training_cost(method="lora", steps=100, resolution=512, num_images=5, num_class_images=0,
                                   train_text_encoder=False)
    assert plain == training_price(steps=100, resolution=512, model_name=selectors.model_info().name)
    # DreamBooth with prior preservation: a class image with every instance image, and the class images first
    prior = services.training_cost(method="dreambooth", steps=100, resolution=512, num_images=5,
                                   num_class_images=10, train_text_encoder=False)
    assert prior == training_price(steps=100, resolution=512, batch=2, class_images=10, class_image_steps=20)


# --- Submit -------------------------------------------------------------------------------------

def test_submit_queues_a_training_job_with_its_pictures_and_reserves_its_cost():
    user = make_user(credits=100)
    job = submit(user)
    assert (job.kind, job.state, job.steps, job.width, job.height, job.num_images) == (
        JobKind.TRAIN, JobState.QUEUED, 100, 512, 512, 1)
    assert job.prompt == "a zwx shape 0"  # no instance prompt: the first caption
    assert job.model_name == selectors.model_info().name
    assert job.cost == 40 and wallet_balance(user=user) == (60, 40)
    training = Training.objects.get(pk=job.pk)
    assert (training.name, training.rank, training.checkpoint_every, training.preset) == ("zwx-shape", 4, 25, "quick")
    files = [image.file.name for image in training.images.all()]
    assert files == [f"trainings/{user.pk}/{job.pk}/{i}.png" for i in range(3)]
    assert all(default_storage.exists(name) for name in files)
    assert [image.caption for image in training.images.all()] == ["a zwx shape 0", "a zwx shape 1", "a zwx shape 2"]


REFUSALS = [  # (pictures, settings, what is raised, its field)
    (pictures(2), {}, InvalidRequest, "images"),
    (None, {"steps": 5}, InvalidRequest, "steps"),
    (None, {"resolution": 2048}, InvalidRequest, "resolution"),
    (None, {"checkpoint_every": -1}, InvalidRequest, "checkpoint_every"),
    (None, {"batch_size": 4}, InvalidRequest, "batch_size"),  # not a setting the studio keeps
    (None, {"method": "dreambooth", "instance_token": "zwx", "instance_prompt": "a photo of a shape"},
     InvalidRequest, "instance_prompt"),
    (None, {"full_finetune": True}, services.TrainingRefused, "full_finetune"),
]


def test_a_refused_submit_writes_and_charges_nothing():
    user = make_user(credits=100)
    for images, fields, error, field in REFUSALS:
        with pytest.raises(error) as refused:
            submit(user, images=images, **fields)
        assert refused.value.field == field, fields
    assert Job.objects.count() == 0 and Training.objects.count() == 0
    assert wallet_balance(user=user) == (100, 0)
    assert stored_files(user) == []


def test_a_submit_without_enough_credits_or_with_a_taken_name_leaves_nothing_behind():
    user = make_user(credits=10)
    with pytest.raises(InsufficientCredits):
        submit(user)  # 40 credits
    assert Job.objects.count() == 0 and wallet_balance(user=user) == (10, 0)
    assert stored_files(user) == []
    submit(user, steps=20)  # 8 credits
    with pytest.raises(services.TrainingRefused) as refused:
        submit(user, steps=10)  # the same name, still under way
    assert (refused.value.field, refused.value.status) == ("name", 409)
    with pytest.raises(services.TrainingRefused):
        submit(user, name="bad name!")
    assert Job.objects.count() == 1


# --- The queue ----------------------------------------------------------------------------------

def test_a_worker_claims_only_the_kinds_it_runs_and_image_lists_show_no_training():
    user = make_user(credits=100)
    training = submit(user)
    image_job = submit_job(user)
    assert selectors.queue_position(image_job) == 1  # a training is not in the image queue
    first = services.job_claim_next(worker_id="gpu-only")  # generation by default
    assert first.job_id == image_job.pk
    assert services.job_claim_next(worker_id="gpu-only") is None  # the training waits for a training worker
    assert claim_training().job_id == training.pk
    assert [job.pk for job in selectors.jobs_for_user(user)] == [image_job.pk]


# --- Settling the credits ------------------------------------------------------------------------

@pytest.mark.database
def test_success_creates_the_lora_and_captures_once_and_a_swept_attempt_cannot_finish_again():
    user = make_user(credits=100)
    job = submit(user)
    old = claim_training("w-old")
    services.training_checkpoint_saved(lease=old, checkpoint=checkpoint(25))
    services.training_record_losses(lease=old, losses=[(step, 1.0 / step) for step in range(1, 31)])
    expire(job)
    assert services.jobs_sweep_expired()["requeued"] == 1
    training = Training.objects.get(pk=job.pk)
    assert training.checkpoint_step == 25 and training.checkpoint_file  # the requeue keeps the checkpoint
    new = claim_training("w-new")
    resume = services.training_resume_point(Job.objects.get(pk=job.pk))
    assert (resume.step, resume.state, resume.lora) == (25, b"state-25", b"lora-bytes25")
    # the old attempt comes back: every write of it is refused, its files removed
    with pytest.raises(services.LeaseLost):
        services.training_checkpoint_saved(lease=old, checkpoint=checkpoint(50))
    assert Training.objects.get(pk=job.pk).checkpoint_step == 25
    # the new attempt redoes the steps after the checkpoint: its losses replace the old attempt's
    services.training_record_losses(lease=new, losses=[(26, 0.5), (27, 0.4)])
    assert Training.objects.get(pk=job.pk).losses[-3:] == [[25, 0.04], [26, 0.5], [27, 0.4]]
    services.training_checkpoint_saved(lease=new, checkpoint=checkpoint(50))
    assert not default_storage.exists(training.checkpoint_file.name)  # the older checkpoint is gone
    result = TrainingResult(lora=b"final-lora", steps_done=100, interrupted=False, seconds=3.0)
    services.training_succeed(lease=new, result=result)
    with pytest.raises(services.LeaseLost):
        services.training_succeed(lease=old, result=result)
    with pytest.raises(services.LeaseLost):
        services.training_fail(lease=new, reason="late")
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.progress_step == 100
    assert ledger(job) == [(EntryKind.RESERVE, 40), (EntryKind.CAPTURE, 40)]
    assert wallet_balance(user=user) == (60, 0)
    lora = LoRA.objects.get(owner=user)
    assert (lora.name, lora.source, lora.steps, lora.rank) == ("zwx-shape", "trained", 100, 4)
    with default_storage.open(lora.file.name, "rb") as handle:
        assert handle.read() == b"final-lora"
    training = Training.objects.get(pk=job.pk)
    assert training.lora == lora and not training.checkpoint_file and not training.checkpoint_lora_file
    assert job.images.count() == 0  # a training makes no Image rows


def test_cancel_while_running_captures_pro_rata_for_the_last_checkpoint_and_keeps_its_lora():
    user = make_user(credits=100)
    job = submit(user)
    lease = claim_training()
    services.training_checkpoint_saved(lease=lease, checkpoint=checkpoint(25))
    services.job_cancel(job=job)
    services.training_checkpoint_saved(lease=lease, checkpoint=checkpoint(30))  # the trainer checkpoints on cancel
    services.training_mark_cancelled(lease=lease)
    with pytest.raises(services.LeaseLost):
        services.training_mark_cancelled(lease=lease)
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    assert ledger(job) == [(EntryKind.RESERVE, 40), (EntryKind.CAPTURE, 12), (EntryKind.RELEASE, 28)]
    assert wallet_balance(user=user) == (88, 0)
    lora = LoRA.objects.get(owner=user)
    assert lora.steps == 30 and Training.objects.get(pk=job.pk).lora == lora


def test_cancel_before_any_checkpoint_and_failure_release_everything():
    user = make_user(credits=100)
    cancelled = submit(user, name="one")
    lease = claim_training()
    services.job_cancel(job=cancelled)
    services.training_mark_cancelled(lease=lease)
    failed = submit(user, name="two")
    lease = claim_training()
    services.training_checkpoint_saved(lease=lease, checkpoint=checkpoint(25))
    services.training_fail(lease=lease, reason="RuntimeError: out of memory")
    for job in (cancelled, failed):
        assert ledger(job) == [(EntryKind.RESERVE, 40), (EntryKind.RELEASE, 40)]
    assert wallet_balance(user=user) == (100, 0) and LoRA.objects.count() == 0
    assert not Training.objects.get(pk=failed.pk).checkpoint_file


def test_a_finished_training_leaves_no_checkpoint_files_not_even_an_unrecorded_one():
    user = make_user(credits=100)
    job = submit(user)
    lease = claim_training()
    services.training_checkpoint_saved(lease=lease, checkpoint=checkpoint(25))
    # a worker killed between writing a checkpoint's files and committing them left this behind
    orphan = default_storage.save(f"trainings/{user.pk}/{job.pk}/checkpoints/000050-dead.state.safetensors",
                                  ContentFile(b"state-50"))
    services.training_fail(lease=lease, reason="worker lost")
    assert not default_storage.exists(orphan)
    assert stored_files(user, f"trainings/{user.pk}/{job.pk}/checkpoints") == []


@pytest.mark.database
def test_a_training_cancelled_while_its_worker_is_dead_or_while_it_waits_to_resume_pays_its_checkpoint():
    user = make_user(credits=100)
    swept = submit(user, name="swept")
    lease = claim_training("dies")
    services.training_checkpoint_saved(lease=lease, checkpoint=checkpoint(50))
    services.job_cancel(job=swept)
    expire(swept)
    assert services.jobs_sweep_expired() == {"requeued": 0, "failed": 0, "cancelled": 1}
    assert ledger(swept) == [(EntryKind.RESERVE, 40), (EntryKind.CAPTURE, 20), (EntryKind.RELEASE, 20)]

    waiting = submit(user, name="waiting")
    lease = claim_training("dies")
    services.training_checkpoint_saved(lease=lease, checkpoint=checkpoint(75))
    expire(waiting)
    assert services.jobs_sweep_expired()["requeued"] == 1
    services.job_cancel(job=waiting)  # queued again, with a checkpoint
    waiting.refresh_from_db()
    assert waiting.state == JobState.CANCELLED
    assert ledger(waiting) == [(EntryKind.RESERVE, 40), (EntryKind.CAPTURE, 30), (EntryKind.RELEASE, 10)]
    assert sorted(LoRA.objects.values_list("name", "steps")) == [("swept", 50), ("waiting", 75)]
    with pytest.raises(services.LeaseLost):
        services.training_succeed(lease=lease, result=TrainingResult(lora=b"x", steps_done=100, interrupted=False))
    assert wallet_balance(user=user) == (50, 0)


@pytest.mark.database
def test_a_training_that_loses_its_worker_too_often_fails_and_releases(settings):
    settings.STUDIO_JOB_MAX_ATTEMPTS = 2
    user = make_user(credits=100)
    job = submit(user)
    for attempt in range(2):
        lease = claim_training(f"dies-{attempt}")
        services.training_checkpoint_saved(lease=lease, checkpoint=checkpoint(25 * (attempt + 1)))
        expire(job)
        services.jobs_sweep_expired()
    job.refresh_from_db()
    assert job.state == JobState.FAILED and job.attempts == 2
    assert ledger(job) == [(EntryKind.RESERVE, 40), (EntryKind.RELEASE, 40)]
    assert not Training.objects.get(pk=job.pk).checkpoint_file


def test_losses_and_samples_are_recorded_under_the_lease_and_the_curve_stays_small():
    user = make_user(credits=100)
    job = submit(user, steps=2000, resolution=64)
    lease = claim_training()
    for start in range(1, 2001, 100):
        services.training_record_losses(lease=lease, losses=[(step, 1.0) for step in range(start, start + 100)])
    losses = Training.objects.get(pk=job.pk).losses
    assert len(losses) <= MAX_LOSS_POINTS and losses[-1] == [2000, 1.0] and losses[0][0] == 1
    assert [step for step, _ in losses] == sorted(step for step, _ in losses)
    assert len(thin_losses([[i, 0.0] for i in range(5000)])) <= MAX_LOSS_POINTS
    names = services.training_samples_saved(lease=lease, step=100, pngs=[png(), png()])
    assert Training.objects.get(pk=job.pk).samples == [{"step": 100, "files": names}]
    assert all(name.startswith(f"trainings/{user.pk}/{job.pk}/samples/") for name in names)


def test_a_worker_runs_the_kinds_of_the_queues_it_consumes(monkeypatch, settings):
    from generation import worker
    from studio.supervisor import planned_children

    for queues, kinds in (({"gpu", "training", "default"}, ("generate", "train")), ({"training"}, ("train",)),
                          ({"gpu", "default"}, ("generate",)), (set(), ("generate",))):
        monkeypatch.setattr(worker, "consumed_queues", queues)
        assert worker.worker_kinds() == kinds, queues
    assert settings.CELERY_TASK_ROUTES["generation.tasks.process_training_queue"] == {"queue": "training"}
    embedded = dict(planned_children("python"))["worker"]
    assert embedded[embedded.index("-Q") + 1] == "gpu,training,default"
