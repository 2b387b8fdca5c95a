"""Several models on the real stack (Celery workers, Redis, the test database, the real engine on
copies of the tiny test model): a job's wake-up reaches only the workers that serve its model; a
worker limited to one model never runs another's job; a model registered while the workers run is
served without a restart (the studio_models_changed broadcast)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from generation import services
from generation.models import Job, JobState
from generation.selectors import model_path
from tests.e2e.conftest import stack_to_start
from tests.factories import job_params, make_user, submit_job
from tests.live_stack import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stack(request):
    with stack_to_start(request, STUDIO_JOB_LEASE_SECONDS="30") as live:
        yield live


def copy_of_the_test_model(folder: Path) -> str:
    shutil.copytree(model_path(), folder)
    return str(folder)


def state_of(job) -> str:
    return Job.objects.values_list("state", flat=True).get(pk=job.pk)


def finished(job, timeout=90) -> str:
    return wait_for(lambda: state_of(job) if state_of(job) in (JobState.SUCCEEDED, JobState.FAILED) else None,
                    timeout, f"job {job.pk} to finish")


def test_each_job_wakes_only_the_workers_of_its_model(stack, tmp_path):
    services.builtin_model()
    second = services.model_register(name="second", title="Second", path=copy_of_the_test_model(tmp_path / "second"))
    limited = stack.start_worker(queues="gpu", env={"STUDIO_WORKER_MODELS": "second"})
    user = make_user(credits=100)
    own_model_job = submit_job(user, steps=2)
    second_job = services.job_submit(user=user, **job_params(steps=2), model=second)
    assert finished(second_job) == JobState.SUCCEEDED
    time.sleep(3)  # the limited worker is idle again: it never takes the other model's job
    assert state_of(own_model_job) == JobState.QUEUED
    assert limited.log_contains("Now consuming the model queues gpu.second")

    anyone = stack.start_worker(queues="gpu")  # serves every model: drains the waiting job on start
    assert finished(own_model_job) == JobState.SUCCEEDED
    third = services.model_register(name="third", title="Third", path=copy_of_the_test_model(tmp_path / "third"))
    wait_for(lambda: anyone.log_contains("gpu.third"), 30, "the running worker to consume the new model's queue")
    third_job = services.job_submit(user=user, **job_params(steps=2), model=third)
    assert finished(third_job) == JobState.SUCCEEDED  # woken on gpu.third, which only `anyone` consumes
    assert anyone.log_contains(f"from {third.path} in") and not limited.log_contains(third.path)


def test_the_first_job_of_a_fresh_studio_wakes_the_worker_that_started_before_its_model_was_registered(stack):
    """bin/studio run registers the studio's own model before the worker starts; a studio whose
    worker came first learns of it from the broadcast its registration sends (no beat runs here,
    so no sweep could wake the job instead)."""
    worker = stack.start_worker(queues="gpu")
    # its start-up drain (which loads the model, then finds no job) is over before the job comes
    wait_for(lambda: worker.log_contains("generation.tasks.process_queue") and worker.log_contains("succeeded in"),
             60, "the worker's start-up drain")
    assert not worker.log_contains("Now consuming the model queues")  # no model registered yet
    job = submit_job(make_user(credits=100), steps=2)
    assert finished(job, timeout=30) == JobState.SUCCEEDED
    assert worker.log_contains(f"Now consuming the model queues {job.model.queue}")
