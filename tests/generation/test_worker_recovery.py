"""A worker that starts takes back the jobs of dead workers on its host, without waiting for leases."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from generation import services, worker
from generation.events import capture_events
from generation.models import Job, JobState
from tests.factories import make_user, submit_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database]


def running_job(user, owner: str) -> Job:
    job = submit_job(user)
    lease = services.job_claim_next(worker_id=owner)
    assert lease.job_id == job.pk
    job.refresh_from_db()
    return job


def exited_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process.pid
    process.kill()
    process.wait()


def test_jobs_of_dead_workers_on_this_host_are_requeued_at_once_and_live_ones_are_left(sleeper):
    host = socket.gethostname()
    user = make_user(credits=500)
    dead = running_job(user, f"{host}:{exited_pid()}:aaaaaa")
    previous_life = running_job(user, f"{host}:{os.getpid()}:bbbbbb")  # this pid, an older worker id
    alive = running_job(user, f"{host}:{sleeper}:cccccc")
    elsewhere = running_job(user, f"another-host:{exited_pid()}:dddddd")

    with capture_events():
        counts = worker.recover_jobs_of_dead_workers()

    assert counts["requeued"] == 2
    for job in (dead, previous_life, alive, elsewhere):
        job.refresh_from_db()
    assert dead.state == previous_life.state == JobState.QUEUED
    assert alive.state == elsewhere.state == JobState.RUNNING  # a live process, or not ours to judge


def test_a_dead_workers_job_on_its_last_attempt_fails_with_its_credits_released(settings):
    settings.STUDIO_JOB_MAX_ATTEMPTS = 1
    user = make_user(credits=500)
    job = running_job(user, f"{socket.gethostname()}:{exited_pid()}:aaaaaa")
    with capture_events():
        counts = worker.recover_jobs_of_dead_workers()
    job.refresh_from_db()
    assert counts["failed"] == 1 and job.state == JobState.FAILED
