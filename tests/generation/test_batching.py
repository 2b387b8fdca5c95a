"""Batching across users: job_claim_batch fills a batch with compatible queued jobs in fair-share
order, and the worker runs it as one batch on the engine, each job with its own lease, progress,
cancel and credits."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import torch
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from billing.models import EntryKind, LedgerEntry
from billing.selectors import wallet_balance
from generation import services, worker
from generation.engine.lora_format import kohya_from_peft
from generation.models import Image, Job, JobState, LoRASource
from generation.selectors import model_path
from tests.engine.test_lora import peft_states
from tests.factories import job_params, make_user, submit_job
from tests.generation.test_canvas import canvas_input

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _one_thread(settings):
    torch.set_num_threads(1)
    settings.STUDIO_TORCH_THREADS = 1


def claimed(leases) -> list:
    return [lease.job_id for lease in leases]


def lora_of(user, name="style", seed=1):
    unet, te = peft_states(model_path(), rank=4, seed=seed, scale=0.3)
    return services.lora_create_from_bytes(owner=user, name=name, data=kohya_from_peft(unet, te, alpha=2.0),
                                           source=LoRASource.IMPORTED, base_model="studio-tiny")


# -- The claim ----------------------------------------------------------------------------------

@pytest.mark.database
def test_a_batch_takes_only_jobs_that_can_share_the_unet(tmp_path):
    users = [make_user(credits=500) for _ in range(12)]
    lead = submit_job(users[0])
    same = [submit_job(users[1], prompt="a blue square", negative_prompt="red", seed=9),
            submit_job(users[2], num_images=2, seed=1)]
    lora = lora_of(users[3])
    others = [
        submit_job(users[3], width=128),
        submit_job(users[4], steps=3),
        submit_job(users[5], sampler="ddim"),
        submit_job(users[6], guidance_scale=5.0),
        services.job_submit(user=users[3], **job_params(), loras=[services.LoraChoice(lora, 0.8)]),
        services.job_submit(user=users[7], **job_params(), canvas=canvas_input()),
    ]
    folder = tmp_path / "second-model"
    shutil.copytree(model_path(), folder)
    second = services.model_register(name="second", title="Second", path=str(folder))
    others.append(services.job_submit(user=users[8], **job_params(), model=second))
    batch = services.job_claim_batch(worker_id="w", max_jobs=10, max_images=10)
    assert claimed(batch) == [lead.pk, *[job.pk for job in same]]
    assert {job.state for job in Job.objects.filter(pk__in=claimed(batch))} == {JobState.RUNNING}
    assert {job.state for job in Job.objects.filter(pk__in=[o.pk for o in others])} == {JobState.QUEUED}
    assert [lease.attempt for lease in batch] == [1, 1, 1]


@pytest.mark.database
def test_jobs_with_the_same_lora_set_share_a_batch_and_a_canvas_job_runs_alone():
    users = [make_user(credits=500) for _ in range(4)]
    lora = lora_of(users[0])
    with_lora = [services.job_submit(user=users[0], **job_params(seed=s), loras=[services.LoraChoice(lora, 0.8)])
                 for s in (1, 2)]
    other_weight = services.job_submit(user=users[0], **job_params(), loras=[services.LoraChoice(lora, 0.5)])
    plain = submit_job(users[1])
    assert claimed(services.job_claim_batch(worker_id="w")) == [job.pk for job in with_lora]
    canvas = services.job_submit(user=users[2], **job_params(), canvas=canvas_input())
    assert claimed(services.job_claim_batch(worker_id="w")) == [plain.pk]  # user 1 is served first: fair
    assert claimed(services.job_claim_batch(worker_id="w")) == [canvas.pk]  # alone, though plain ones wait
    assert claimed(services.job_claim_batch(worker_id="w")) == [other_weight.pk]


@pytest.mark.database
def test_one_job_per_user_per_round_so_many_jobs_of_one_user_never_push_out_another(settings):
    a, b, c = (make_user(credits=1000) for _ in range(3))
    a_jobs = [submit_job(a, seed=s) for s in range(8)]
    b_job = submit_job(b)
    c_job = submit_job(c)
    assert settings.STUDIO_BATCH_MAX_JOBS == 4 and settings.STUDIO_BATCH_MAX_IMAGES == 8
    first = services.job_claim_batch(worker_id="w")
    assert claimed(first) == [a_jobs[0].pk, b_job.pk, c_job.pk, a_jobs[1].pk]
    assert claimed(services.job_claim_batch(worker_id="w")) == [job.pk for job in a_jobs[2:6]]


@pytest.mark.database
def test_user_b_runs_in_the_first_batch_though_a_queued_eight(settings):
    settings.STUDIO_BATCH_MAX_JOBS = 2
    a, b = make_user(credits=1000), make_user(credits=100)
    a_jobs = [submit_job(a, seed=s) for s in range(8)]
    b_job = submit_job(b)
    assert claimed(services.job_claim_batch(worker_id="w")) == [a_jobs[0].pk, b_job.pk]


@pytest.mark.database
def test_the_batch_is_bounded_by_jobs_and_images_and_one_turns_batching_off(settings):
    users = [make_user(credits=1000) for _ in range(6)]
    jobs = [submit_job(user, num_images=n) for user, n in zip(users, (3, 4, 2, 1, 1, 1), strict=True)]
    # 3 + 4 would be 7 images of at most 6: the 4-image job waits, smaller ones fill the batch
    assert claimed(services.job_claim_batch(worker_id="w", max_jobs=4, max_images=6)) == [
        jobs[0].pk, jobs[2].pk, jobs[3].pk]
    assert claimed(services.job_claim_batch(worker_id="w", max_jobs=2, max_images=8)) == [jobs[1].pk, jobs[4].pk]
    settings.STUDIO_BATCH_MAX_JOBS = 1
    assert claimed(services.job_claim_batch(worker_id="w")) == [jobs[5].pk]
    assert services.job_claim_batch(worker_id="w") == []


@pytest.mark.database
def test_a_worker_limited_to_a_model_never_batches_another_models_job(tmp_path):
    folder = tmp_path / "second-model"
    shutil.copytree(model_path(), folder)
    services.builtin_model()
    second = services.model_register(name="second", title="Second", path=str(folder))
    users = [make_user(credits=500) for _ in range(4)]
    default_jobs = [submit_job(users[0]), submit_job(users[1])]
    second_jobs = [services.job_submit(user=user, **job_params(), model=second) for user in users[2:]]
    assert claimed(services.job_claim_batch(worker_id="only-second", models=["second"])) == [
        job.pk for job in second_jobs]
    assert services.job_claim_batch(worker_id="only-second", models=["second"]) == []
    assert claimed(services.job_claim_batch(worker_id="any")) == [job.pk for job in default_jobs]


@pytest.mark.database
def test_a_job_another_worker_takes_while_the_batch_fills_is_passed_over(monkeypatch):
    from generation.services import queue

    users = [make_user(credits=100) for _ in range(4)]
    jobs = [submit_job(user) for user in users]
    claim = queue._claim
    calls, rival = [], []

    def claim_after_a_rival(job_id, worker_id):
        calls.append(worker_id)
        if calls == ["w", "w"]:  # the batch's first fill: another worker's claim gets there first
            rival.append(services.job_claim_next(worker_id="rival"))
        return claim(job_id, worker_id)

    monkeypatch.setattr(queue, "_claim", claim_after_a_rival)
    batch = services.job_claim_batch(worker_id="w")
    assert claimed(rival) == [jobs[1].pk]
    assert claimed(batch) == [jobs[0].pk, jobs[2].pk, jobs[3].pk]
    assert Job.objects.get(pk=jobs[1].pk).lease_owner == "rival"


# -- The worker ---------------------------------------------------------------------------------

def pixels(job) -> np.ndarray:
    image = Image.objects.get(job=job, index=0)
    with default_storage.open(image.file.name, "rb") as handle:
        return np.asarray(PILImage.open(io.BytesIO(handle.read())).convert("RGB")).astype(np.int16)


def captures(job) -> int:
    return LedgerEntry.objects.filter(subject=job.billing_subject, kind=EntryKind.CAPTURE).count()


@pytest.fixture
def batch_sizes(monkeypatch):
    """The sizes of the batches the engine ran."""
    sizes = []
    engine = worker.engine()
    run = engine.generate_batch

    def spy(requests, **kwargs):
        sizes.append(len(requests))
        return run(requests, **kwargs)

    monkeypatch.setattr(engine, "generate_batch", spy)
    return sizes


# The worker's lease keeper renews from its own connection while a model loads: these tests commit.
@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_the_worker_runs_a_batch_each_job_its_own_images_and_credits_captured_once(settings, batch_sizes):
    users = [make_user(credits=100) for _ in range(3)]
    params = [dict(prompt="a red circle", seed=3), dict(prompt="a blue square", negative_prompt="green", seed=8,
                                                         num_images=2), dict(prompt="a cat", seed=5)]
    batched = [submit_job(user, **p) for user, p in zip(users, params, strict=True)]
    assert worker.process_available_jobs() == 3
    assert batch_sizes == [3]
    for job in batched:
        job.refresh_from_db()
        assert job.state == JobState.SUCCEEDED, job.error
        assert job.images.count() == job.num_images and job.progress_step == job.steps
        assert captures(job) == 1
        assert wallet_balance(user=job.user)[0] == 100 - job.cost
    assert [im.seed for im in batched[1].images.order_by("index")] == [8, 9]
    assert "Negative prompt: green" in batched[1].images.first().infotext
    settings.STUDIO_BATCH_MAX_JOBS = 1  # the same jobs one after another
    alone = [submit_job(user, **p) for user, p in zip(users, params, strict=True)]
    assert worker.process_available_jobs() == 3
    assert batch_sizes == [3, 1, 1, 1]
    for a, b in zip(batched, alone, strict=True):
        assert np.abs(pixels(a) - pixels(b)).max() <= 1  # tests/engine/test_batching.py: at most 1 level


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_a_job_cancelled_mid_batch_is_cancelled_at_once_and_the_others_finish(monkeypatch, batch_sizes):
    monkeypatch.setattr(worker, "HEARTBEAT_SECONDS", 0.0)  # a heartbeat (and the cancel check) every step
    users = [make_user(credits=100) for _ in range(3)]
    jobs = [submit_job(user, steps=6, seed=s) for s, user in enumerate(users)]
    victim = jobs[1]
    report = worker.StepReporter.on_step
    steps_seen = []

    def on_step(self, update):
        report(self, update)
        if self.lease.job_id == victim.pk:
            steps_seen.append(update.step)
            if update.step == 2:
                services.job_cancel(job=Job.objects.get(pk=victim.pk))

    monkeypatch.setattr(worker.StepReporter, "on_step", on_step)
    assert worker.process_available_jobs() == 3
    assert batch_sizes == [3]
    for job in jobs:
        job.refresh_from_db()
    assert victim.state == JobState.CANCELLED and victim.error == "Cancelled while running."
    assert steps_seen == [1, 2, 3]  # its cancel arrived with step 3's heartbeat; no step after
    assert wallet_balance(user=victim.user) == (100, 0) and captures(victim) == 0
    assert victim.images.count() == 0
    for job in (jobs[0], jobs[2]):
        assert job.state == JobState.SUCCEEDED and job.images.count() == 1 and captures(job) == 1
        assert victim.finished_at < job.finished_at  # it left the batch before the others finished


@pytest.mark.django_db(transaction=True)
def test_a_lora_gone_fails_every_job_of_the_batch_with_the_reason_and_credits_back(batch_sizes):
    users = [make_user(credits=100) for _ in range(2)]
    lora = lora_of(users[0])
    jobs = [services.job_submit(user=users[0], **job_params(seed=s), loras=[services.LoraChoice(lora, 1.0)])
            for s in range(2)]
    jobs.append(submit_job(users[1]))  # another user's job without it waits for the next batch
    type(lora).objects.filter(pk=lora.pk).delete()  # as if deleted behind the service's back
    assert worker.process_available_jobs() == 3
    assert batch_sizes == [1]  # the two jobs of the LoRA failed before the engine ran
    for job in jobs:
        job.refresh_from_db()
    for job in jobs[:2]:
        assert job.state == JobState.FAILED and "The LoRA style was deleted" in job.error
    assert wallet_balance(user=users[0]) == (100, 0)
    assert jobs[2].state == JobState.SUCCEEDED
