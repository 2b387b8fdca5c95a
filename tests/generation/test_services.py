"""Job lifecycle through generation.services: states, leases, credits and the events each change sends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.selectors import wallet_balance
from billing.services import InsufficientCredits
from generation import services
from generation.events import capture_events, job_group
from generation.models import Image, Job, JobState
from tests.factories import job_params, make_user, submit_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database]


def stored(index=0, seed=42):
    return services.StoredImage(
        index=index, seed=seed, width=64, height=64, file_name=f"images/x/{index}.png",
        thumbnail_name=f"images/x/{index}.webp", infotext="a red circle\nSteps: 4",
    )


def state_events(events, job):
    return [event["state"] for group, event in events if group == job_group(job.pk) and event["type"] == "job.state"]


def test_submit_reserves_credits_and_queues_the_job_in_one_transaction():
    user = make_user(credits=50)
    with capture_events() as events:
        job = submit_job(user)
    assert job.state == JobState.QUEUED
    assert job.cost > 0
    assert wallet_balance(user=user) == (50 - job.cost, job.cost)
    assert state_events(events, job) == [JobState.QUEUED]


def test_submit_without_enough_credits_creates_nothing():
    user = make_user(credits=1)
    with pytest.raises(InsufficientCredits):
        submit_job(user, width=512, height=512, steps=150, num_images=4)
    assert Job.objects.count() == 0
    assert wallet_balance(user=user) == (1, 0)


def test_too_many_active_jobs_is_refused(settings):
    settings.STUDIO_MAX_ACTIVE_JOBS_PER_USER = 2
    user = make_user(credits=100)
    submit_job(user)
    submit_job(user)
    with pytest.raises(services.TooManyActiveJobs):
        submit_job(user)
    assert Job.objects.count() == 2


def test_claim_leases_the_job_and_a_second_claim_finds_nothing():
    user = make_user(credits=50)
    job = submit_job(user)
    lease = services.job_claim_next(worker_id="w1")
    assert lease.job_id == job.pk and lease.attempt == 1
    job.refresh_from_db()
    assert job.state == JobState.RUNNING and job.lease_owner == "w1" and job.lease_expires_at > timezone.now()
    assert services.job_claim_next(worker_id="w2") is None


def test_claim_is_fair_between_users():
    alice, bob = make_user(credits=100), make_user(credits=100)
    a1, a2, a3 = submit_job(alice), submit_job(alice), submit_job(alice)
    b1 = submit_job(bob)
    order = []
    while lease := services.job_claim_next(worker_id="w"):
        order.append(lease.job_id)
        services.job_succeed(lease=lease, images=[], engine_seconds=0.1)
    # Bob's single job does not wait behind all of Alice's.
    assert order.index(b1.pk) <= 1
    assert order.index(a1.pk) < order.index(a2.pk) < order.index(a3.pk)


def test_success_stores_images_captures_credits_and_sends_events():
    user = make_user(credits=50)
    job = submit_job(user, num_images=2)
    lease = services.job_claim_next(worker_id="w1")
    with capture_events() as events:
        services.job_succeed(lease=lease, images=[stored(0, 42), stored(1, 43)], engine_seconds=1.5)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.finished_at and job.lease_owner == ""
    assert list(job.images.values_list("seed", flat=True).order_by("index")) == [42, 43]
    assert wallet_balance(user=user) == (50 - job.cost, 0)
    assert state_events(events, job) == [JobState.SUCCEEDED]


def test_fewer_images_than_asked_captures_only_what_was_produced():
    user = make_user(credits=50)
    job = submit_job(user, num_images=4, width=512, height=512, steps=30)
    assert job.cost == 16
    lease = services.job_claim_next(worker_id="w1")
    services.job_succeed(lease=lease, images=[stored(0)], engine_seconds=1.0)
    assert wallet_balance(user=user) == (50 - 4, 0)


def test_failure_releases_the_hold_and_keeps_the_reason():
    user = make_user(credits=50)
    job = submit_job(user)
    lease = services.job_claim_next(worker_id="w1")
    services.job_fail(lease=lease, reason="RuntimeError: out of memory")
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "out of memory" in job.error
    assert wallet_balance(user=user) == (50, 0)


def test_cancel_a_queued_job_releases_at_once():
    user = make_user(credits=50)
    job = submit_job(user)
    with capture_events() as events:
        job = services.job_cancel(job=job)
    assert job.state == JobState.CANCELLED
    assert wallet_balance(user=user) == (50, 0)
    assert state_events(events, job) == [JobState.CANCELLED]
    assert services.job_claim_next(worker_id="w1") is None


def test_cancel_a_running_job_asks_the_worker_which_then_stops():
    user = make_user(credits=50)
    job = submit_job(user)
    lease = services.job_claim_next(worker_id="w1")
    assert services.job_heartbeat(lease=lease, progress_step=1) is False
    job = services.job_cancel(job=job)
    assert job.state == JobState.RUNNING and job.cancel_requested
    assert services.job_heartbeat(lease=lease, progress_step=2) is True
    services.job_mark_cancelled(lease=lease)
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    assert wallet_balance(user=user) == (50, 0)


def expire(job):
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_sweep_requeues_a_job_whose_worker_died_and_fences_the_old_worker():
    user = make_user(credits=50)
    job = submit_job(user)
    dead = services.job_claim_next(worker_id="dead")
    expire(job)
    assert services.jobs_sweep_expired() == {"requeued": 1, "failed": 0, "cancelled": 0}
    job.refresh_from_db()
    assert job.state == JobState.QUEUED
    assert wallet_balance(user=user) == (50 - job.cost, job.cost)  # the hold stays while it is retried

    alive = services.job_claim_next(worker_id="alive")
    assert alive.attempt == 2
    # The old worker wakes up: everything it tries is refused, so the job cannot finish twice.
    with pytest.raises(services.LeaseLost):
        services.job_heartbeat(lease=dead, progress_step=3)
    with pytest.raises(services.LeaseLost):
        services.job_succeed(lease=dead, images=[stored()], engine_seconds=1)
    services.job_succeed(lease=alive, images=[stored()], engine_seconds=1)
    assert Image.objects.filter(job=job).count() == 1
    assert wallet_balance(user=user) == (50 - job.cost, 0)


def test_sweep_gives_up_after_the_last_attempt_and_releases(settings):
    settings.STUDIO_JOB_MAX_ATTEMPTS = 2
    user = make_user(credits=50)
    job = submit_job(user)
    for _ in range(2):
        services.job_claim_next(worker_id="dies")
        expire(job)
        services.jobs_sweep_expired()
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert "stopped responding 2 times" in job.error
    assert wallet_balance(user=user) == (50, 0)


def test_sweep_finishes_a_cancel_whose_worker_died():
    user = make_user(credits=50)
    job = submit_job(user)
    services.job_claim_next(worker_id="dies")
    services.job_cancel(job=job)
    expire(job)
    assert services.jobs_sweep_expired()["cancelled"] == 1
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    assert wallet_balance(user=user) == (50, 0)


def test_sweep_leaves_live_leases_alone():
    user = make_user(credits=50)
    job = submit_job(user)
    services.job_claim_next(worker_id="alive")
    assert services.jobs_sweep_expired() == {"requeued": 0, "failed": 0, "cancelled": 0}
    job.refresh_from_db()
    assert job.state == JobState.RUNNING


def test_a_stranded_queue_wakes_a_worker_but_a_busy_one_is_left_alone(monkeypatch):
    """Unit level (the wake-up message is recorded, not sent); the live stack test
    test_a_job_whose_wake_up_message_was_lost_still_runs covers the real broker and beat."""
    from generation import tasks

    wakes = []
    monkeypatch.setattr(tasks.process_queue, "delay", lambda: wakes.append(1))
    user = make_user(credits=50)
    submit_job(user)
    submit_job(user)
    wakes.clear()  # the submits' own wake-ups
    assert services.jobs_wake_if_stranded() is False  # just queued: its message is on its way
    Job.objects.update(created_at=timezone.now() - timedelta(minutes=5))
    services.job_claim_next(worker_id="busy")
    assert services.jobs_wake_if_stranded() is False  # a worker is running a job and will loop
    assert wakes == []
    Job.objects.filter(state=JobState.RUNNING).update(state=JobState.SUCCEEDED)
    assert services.jobs_wake_if_stranded() is True
    assert wakes == [1]


def test_job_params_roundtrip_to_engine_request():
    user = make_user(credits=50)
    job = submit_job(user, **job_params(prompt="a blue star", seed=7, num_images=3))
    request = job.generation_request()
    assert (request.prompt, request.seed, request.num_images, request.width) == ("a blue star", 7, 3, 64)
