"""A training on the real stack (a Celery worker of the default queues gpu,training,default, Redis,
the test database, the real trainer on the tiny test model at 64 px, 300 steps): a generation job submitted
while it trains starts within 10 s (the worker runs it in a pause point); SIGKILL the worker after
a checkpoint, start a new one, and the training resumes from that checkpoint (not from step 0) and
finishes with its credits captured exactly once."""

from __future__ import annotations

import io
import re
import time

import pytest
from PIL import Image as PILImage

from billing.models import EntryKind, LedgerEntry
from billing.selectors import wallet_balance
from generation import services
from generation.models import Job, JobState, LoRA, Training
from tests.e2e.conftest import stack_to_start
from tests.factories import make_user, submit_job
from tests.live_stack import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

STEPS, CHECKPOINT_EVERY, SAMPLE_EVERY = 300, 10, 150  # long enough to still run at the kill on a fast CPU
FINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def png(colour) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def stack(request):
    # A lease long enough for the trainer to load its model between heartbeats on a busy machine;
    # the restarted worker takes back the dead one's lease at once anyway.
    with stack_to_start(request, STUDIO_JOB_LEASE_SECONDS="30") as live:
        yield live


class Timeline:
    def __init__(self):
        self.start = time.monotonic()
        self.marks = []

    def mark(self, name):
        now = time.monotonic()
        self.marks.append((name, now - self.start))
        self.start = now


def fresh(model, pk):
    return model.objects.get(pk=pk)


def test_a_training_yields_to_generation_survives_a_sigkill_by_resuming_and_is_charged_once(stack):
    timeline = Timeline()
    first_worker = stack.start_worker()  # gpu,training,default: the embedded studio's worker
    timeline.mark("worker up")
    user = make_user(credits=100)
    images = [services.TrainingImageInput(png=png((60 * i, 120, 200)), caption=f"a zwx shape {i}") for i in range(3)]
    training = services.training_submit(user=user, name="zwx-shape", images=images, spec_fields={
        "method": "lora", "steps": STEPS, "rank": 4, "learning_rate": 1e-3, "resolution": 64,
        "checkpoint_every": CHECKPOINT_EVERY, "sample_every": SAMPLE_EVERY, "validation_prompts": ["a zwx shape"]})

    wait_for(lambda: fresh(Job, training.pk).progress_step > 0, 90, "the training to take its first steps")
    timeline.mark("training stepping")

    # Another user's picture while it trains: it starts within 10 s and finishes mid-training.
    other = make_user(credits=50)
    picture = submit_job(other, width=64, height=64, steps=4)
    wait_for(lambda: fresh(Job, picture.pk).state in FINAL_STATES, 30, "the generation job to finish")
    picture = fresh(Job, picture.pk)
    waited = (picture.started_at - picture.created_at).total_seconds()
    print(f"generation job started {waited:.1f}s after its submit, during the training")
    assert picture.state == JobState.SUCCEEDED and picture.images.count() == 1
    assert waited < 10
    assert fresh(Job, training.pk).state == JobState.RUNNING  # it ran in one of the training's pauses
    timeline.mark("generation done")

    # SIGKILL the worker once a checkpoint is stored, mid-training.
    wait_for(lambda: fresh(Training, training.pk).checkpoint_step >= CHECKPOINT_EVERY, 60, "a checkpoint")
    first_worker.kill()
    killed = fresh(Training, training.pk)
    assert fresh(Job, training.pk).state == JobState.RUNNING and killed.checkpoint_step < STEPS
    timeline.mark("checkpoint, SIGKILL")
    second_worker = stack.start_worker()
    timeline.mark("second worker up")
    wait_for(lambda: fresh(Job, training.pk).state in FINAL_STATES, 120, "the training to finish")
    timeline.mark("resumed and finished")

    job = fresh(Job, training.pk)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.attempts == 2
    resumed = re.findall(rf"Training {job.pk} resumes from its checkpoint at step (\d+) \(attempt 2\)",
                         second_worker.log_path.read_text())
    assert resumed and int(resumed[0]) >= killed.checkpoint_step > 0, second_worker.log_tail()
    assert not first_worker.log_contains(f"Training {job.pk} resumes")  # the first attempt started at 0
    # The curve: every step once, in order (the steps redone after the checkpoint replaced their points).
    done = fresh(Training, training.pk)
    assert [step for step, _ in done.losses] == list(range(1, STEPS + 1))
    lora = LoRA.objects.get(owner=user)
    assert (done.lora_id, lora.steps, lora.name) == (lora.pk, STEPS, "zwx-shape")
    entries = list(LedgerEntry.objects.filter(subject=job.billing_subject).values_list("kind", "amount"))
    assert sorted(entries) == sorted([(EntryKind.RESERVE, job.cost), (EntryKind.CAPTURE, job.cost)])
    assert wallet_balance(user=user) == (100 - job.cost, 0)
    assert job.images.count() == 0
    assert [entry["step"] for entry in done.samples] == [SAMPLE_EVERY, STEPS]  # stored, recorded once per step
    print(f"phases: {', '.join(f'{name} {seconds:.1f}s' for name, seconds in timeline.marks)}")
