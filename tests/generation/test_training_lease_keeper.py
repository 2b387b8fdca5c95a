"""A training's lease is renewed from a side thread while the trainer has no hook to do it from
(loading a model can take longer than the lease): generation.worker.TrainingReporter.lease_kept."""

from __future__ import annotations

import time

import pytest

from generation import services
from generation.models import Job, JobKind, JobState
from generation.worker import TrainingReporter
from tests.generation.test_training_pages import make_training, make_user

pytestmark = pytest.mark.django_db(transaction=True)  # the keeper thread has its own connection


def _claimed_training():
    job = make_training(make_user(credits=100), state=JobState.QUEUED)
    lease = services.job_claim_next(worker_id="host:1:keeper", kinds=(JobKind.TRAIN,))
    assert lease is not None and lease.job_id == job.pk
    reporter = TrainingReporter(lease, total_steps=job.steps, resumed_at=0, run_generation=False)
    reporter.heartbeat()
    return job, reporter


def _expiry(job):
    return Job.objects.values_list("lease_expires_at", flat=True).get(pk=job.pk)


def test_a_long_stretch_without_hooks_keeps_the_lease_and_hears_a_cancel():
    job, reporter = _claimed_training()
    before = _expiry(job)
    with reporter.lease_kept(stale_after=0.2):
        time.sleep(0.5)  # the main thread is busy (a model load): no hook runs
        Job.objects.filter(pk=job.pk).update(cancel_requested=True)
        time.sleep(0.5)
    assert _expiry(job) > before
    assert reporter.cancel and not reporter.lease_lost


def test_the_keeper_leaves_a_lease_alone_while_the_trainer_renews_it_itself():
    job, reporter = _claimed_training()
    with reporter.lease_kept(stale_after=30):
        time.sleep(0.3)
        before = _expiry(job)
        time.sleep(0.3)
    assert _expiry(job) == before  # nothing stale: no extra writes


def test_a_lease_taken_over_meanwhile_stops_the_training():
    job, reporter = _claimed_training()
    Job.objects.filter(pk=job.pk).update(lease_owner="host:2:other")  # swept and claimed again
    with reporter.lease_kept(stale_after=0.1):
        time.sleep(0.5)
    assert reporter.lease_lost and reporter.cancel
