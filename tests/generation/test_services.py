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

pytestmark = [pytest.mark.django_db(transaction=True)]


def stored(index=0, seed=42):
    return services.StoredImage(
        index=index, seed=seed, width=64, height=64, file_name=f"images/x/{index}.png",
        thumbnail_name=f"images/x/{index}.webp", infotext="a red circle\nSteps: 4",
    )


def state_events(events, job):
    return [event["state"] for group, event in events if group == job_group(job.pk) and event["type"] == "job.state"]


@pytest.mark.database
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


@pytest.mark.database
def test_too_many_active_jobs_is_refused(settings):
    settings.STUDIO_MAX_ACTIVE_JOBS_PER_USER = 2
    user = make_user(credits=100)
    submit_job(user)
    submit_job(user)
    with pytest.raises(services.TooManyActiveJobs):
        submit_job(user)
    assert Job.objects.count() == 2


@pytest.mark.database
def test_claim_leases_the_job_and_a_second_claim_finds_nothing():
    user = make_user(credits=50)
    job = submit_job(user)
    lease = services.job_claim_next(worker_id="w1")
    assert lease.job_id == job.pk and lease.attempt == 1
    job.refresh_from_db()
    assert job.state == JobState.RUNNING and job.lease_owner == "w1" and job.lease_expires_at > timezone.now()
    assert services.job_claim_next(worker_id="w2") is None


@pytest.mark.database
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


@pytest.mark.database
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


@pytest.mark.database
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


@pytest.mark.database
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


@pytest.mark.database
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


@pytest.mark.database
def test_sweep_leaves_live_leases_alone():
    user = make_user(credits=50)
    job = submit_job(user)
    services.job_claim_next(worker_id="alive")
    assert services.jobs_sweep_expired() == {"requeued": 0, "failed": 0, "cancelled": 0}
    job.refresh_from_db()
    assert job.state == JobState.RUNNING


@pytest.mark.database
def test_a_stranded_queue_wakes_a_worker_but_a_busy_one_is_left_alone(monkeypatch):
    """Unit level (the wake-up message is recorded, not sent); the live stack test
    test_a_job_whose_wake_up_message_was_lost_still_runs covers the real broker and beat."""
    from celery import current_app

    from generation.services import wakeup

    wakes = []
    monkeypatch.setattr(current_app, "send_task", lambda name, *a, **kw: wakes.append((name, kw.get("queue"))))
    monkeypatch.setattr(wakeup, "wake_workers_in_background", wakeup.wake_workers)  # no thread racing clear()
    user = make_user(credits=50)
    job = submit_job(user)
    assert wakes == [("generation.tasks.process_queue", job.model.queue)]  # only its model's workers
    submit_job(user)
    wakes.clear()  # the submits' own wake-ups
    assert services.jobs_wake_if_stranded() is False  # just queued: its message is on its way
    Job.objects.update(created_at=timezone.now() - timedelta(minutes=5))
    services.job_claim_next(worker_id="busy")
    assert services.jobs_wake_if_stranded() is False  # a worker is running a job and will loop
    assert wakes == []
    Job.objects.filter(state=JobState.RUNNING).update(state=JobState.SUCCEEDED)
    assert services.jobs_wake_if_stranded() is True
    # the queue of each model with queued jobs, and the generic one (jobs from before the registry)
    assert wakes == [("generation.tasks.process_queue", job.model.queue), ("generation.tasks.process_queue", None)]


def test_job_params_roundtrip_to_engine_request():
    user = make_user(credits=50)
    job = submit_job(user, **job_params(prompt="a blue star", seed=7, num_images=3))
    request = job.generation_request()
    assert (request.prompt, request.seed, request.num_images, request.width) == ("a blue star", 7, 3, 64)


def test_wake_ups_go_by_task_name_to_the_gpu_queue(settings):
    """services never import tasks: the name they send must be the task's, routed to `gpu`."""
    from generation.services.wakeup import PROCESS_QUEUE_TASK
    from generation.tasks import process_queue

    assert process_queue.name == PROCESS_QUEUE_TASK
    assert settings.CELERY_TASK_ROUTES[PROCESS_QUEUE_TASK] == {"queue": "gpu"}


# --- Charging what was quoted (#8 item 9) ---------------------------------------------------------


def set_reference_credits(credits: int) -> None:
    from billing.models import PriceSettings

    prices = PriceSettings.load()
    prices.reference_credits = credits
    prices.save()


@pytest.mark.parametrize("new_price", [40, 1])
def test_a_price_change_after_submit_does_not_change_the_charge(new_price):
    user = make_user(credits=100)
    job = submit_job(user, width=512, height=512, steps=30, num_images=2)
    assert job.cost == 8
    set_reference_credits(new_price)  # staff edit the prices while the job waits
    lease = services.job_claim_next(worker_id="w1")
    services.job_succeed(lease=lease, images=[stored(0), stored(1)], engine_seconds=1.0)
    assert wallet_balance(user=user) == (100 - 8, 0)


def test_a_partial_result_is_charged_pro_rata_of_the_quote_rounded_down():
    user = make_user(credits=100)
    job = submit_job(user, width=512, height=512, steps=31, num_images=3)  # 4 * 31/30 * 3 = 12.4 -> 13
    assert job.cost == 13
    set_reference_credits(400)
    lease = services.job_claim_next(worker_id="w1")
    services.job_succeed(lease=lease, images=[stored(0), stored(1)], engine_seconds=1.0)
    assert wallet_balance(user=user) == (100 - 8, 0)  # 13 * 2/3 = 8.67 -> 8, in the user's favour
    from billing.selectors import subject_charge

    assert subject_charge(subject=job.billing_subject)["captured"] == 8


# --- Deleting jobs (#8 item 22) -------------------------------------------------------------------


def test_a_queued_or_running_job_is_not_deleted_and_keeps_its_hold():
    user = make_user(credits=50)
    queued, running = submit_job(user), submit_job(user)
    services.job_claim_next(worker_id="w1")
    for job in (queued, running):
        with pytest.raises(services.JobNotDeletable):
            services.job_delete(job=job)
        with pytest.raises(services.JobNotDeletable):
            Job.objects.get(pk=job.pk).delete()
    with pytest.raises(services.JobNotDeletable):
        Job.objects.filter(user=user).delete()
    assert Job.objects.filter(user=user).count() == 2
    assert wallet_balance(user=user) == (50 - queued.cost - running.cost, queued.cost + running.cost)


def test_a_finished_job_with_an_unsettled_hold_is_not_deleted():
    from billing.services import credits_reserve

    user = make_user(credits=50)
    job = submit_job(user)
    Job.objects.filter(pk=job.pk).update(state=JobState.FAILED)  # finished behind the services' back
    with pytest.raises(services.JobNotDeletable, match="on hold"):
        services.job_delete(job=job)
    credits_reserve(user=user, subject=job.billing_subject, amount=job.cost)  # idempotent: still one hold
    assert Job.objects.filter(pk=job.pk).exists()


def test_a_finished_job_is_deleted_with_its_images_and_files(tmp_path, settings):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    user = make_user(credits=50)
    job = submit_job(user)
    lease = services.job_claim_next(worker_id="w1")
    png = default_storage.save(f"images/test/{job.pk}.png", ContentFile(b"png"))
    thumb = default_storage.save(f"images/test/{job.pk}.webp", ContentFile(b"webp"))
    image = services.StoredImage(index=0, seed=1, width=64, height=64, file_name=png, thumbnail_name=thumb, infotext="x")
    services.job_succeed(lease=lease, images=[image], engine_seconds=1)
    services.job_delete(job=job)
    assert not Job.objects.filter(pk=job.pk).exists() and not Image.objects.filter(job_id=job.pk).exists()
    assert not default_storage.exists(png) and not default_storage.exists(thumb)
    assert wallet_balance(user=user) == (50 - job.cost, 0)  # the ledger keeps the history


def test_the_admin_refuses_to_delete_a_job_that_holds_credits(client):
    from django.urls import reverse

    admin = make_user(staff=True)
    admin.is_superuser = True
    admin.save()
    user = make_user(credits=50)
    running, done = submit_job(user), submit_job(user)
    services.job_claim_next(worker_id="w1")  # claims `running` (the older one)
    Job.objects.filter(pk=done.pk).update(state=JobState.QUEUED)
    done = services.job_cancel(job=done)
    client.force_login(admin)
    assert client.get(reverse("admin:generation_job_delete", args=[running.pk])).status_code == 403
    assert client.post(reverse("admin:generation_job_delete", args=[running.pk]), {"post": "yes"}).status_code == 403
    changelist = reverse("admin:generation_job_changelist")
    both = {"action": "delete_selected", "_selected_action": [str(running.pk), str(done.pk)], "post": "yes"}
    assert client.post(changelist, both).status_code == 403  # Django refuses the whole bulk delete
    assert Job.objects.count() == 2
    client.post(changelist, {**both, "_selected_action": [str(done.pk)]})
    assert list(Job.objects.values_list("pk", flat=True)) == [running.pk]
    assert wallet_balance(user=user) == (50 - running.cost, running.cost)
    assert client.post(reverse("admin:generation_job_delete", args=[running.pk]), {"post": "yes"}).status_code == 403


def test_billing_check_reports_holds_of_jobs_that_are_final_or_gone():
    from io import StringIO

    from django.core.management import CommandError, call_command

    user = make_user(credits=50)
    running, finished, gone = submit_job(user), submit_job(user), submit_job(user)
    call_command("billing_check", stdout=StringIO())  # all three are live
    # Behind the services' back, as an admin delete or a buggy script would do it.
    Job.objects.filter(pk__in=[finished.pk, gone.pk]).update(state=JobState.SUCCEEDED)
    Job.objects.filter(pk=gone.pk).delete()
    err = StringIO()
    with pytest.raises(CommandError, match="2 stale hold"):
        call_command("billing_check", stdout=StringIO(), stderr=err)
    assert finished.billing_subject in err.getvalue() and gone.billing_subject in err.getvalue()
    assert running.billing_subject not in err.getvalue()


def test_pages_of_billing_link_a_jobs_hold_to_the_job(client):
    from django.urls import reverse

    user = make_user(credits=50)
    job = submit_job(user)
    client.force_login(user)
    html = client.get(reverse("billing:credits")).content.decode()
    assert f'href="{reverse("generation:job_detail", args=[job.pk])}"' in html


@pytest.mark.database
def test_the_admins_bulk_delete_keeps_jobs_that_became_active_meanwhile(rf):
    """Django refuses a bulk delete that includes an active job; if one turns active between the
    confirmation and the delete, delete_queryset still keeps it (through services.job_delete)."""
    from django.contrib import admin as django_admin
    from django.contrib.messages.storage.fallback import FallbackStorage

    from generation.admin import JobAdmin

    user = make_user(credits=50)
    running, done = submit_job(user), submit_job(user)
    services.job_claim_next(worker_id="w1")
    services.job_cancel(job=done)
    request = rf.post("/")
    request.user = make_user(staff=True)
    request.session = {}
    request._messages = FallbackStorage(request)
    JobAdmin(Job, django_admin.site).delete_queryset(request, Job.objects.filter(user=user))
    assert list(Job.objects.values_list("pk", flat=True)) == [running.pk]
    assert [str(m) for m in request._messages] == ["1 job(s) kept: they still hold credits (queued, running or on hold)."]


def test_the_job_admin_page_shows_the_jobs_credits_and_subject(client):
    from django.urls import reverse

    admin = make_user(staff=True)
    admin.is_superuser = True
    admin.save()
    user = make_user(credits=50)
    job = submit_job(user, width=512, height=512, steps=30, num_images=2)  # 8 credits
    lease = services.job_claim_next(worker_id="w1")
    services.job_succeed(lease=lease, images=[stored(0)], engine_seconds=1)
    client.force_login(admin)
    html = client.get(reverse("admin:generation_job_change", args=[job.pk])).content.decode()
    assert "8 reserved, 4 spent, 4 released, 0 refunded, 0 on hold" in html
    assert f"<code>job:{job.pk}</code>" in html and reverse("billing:staff_user", args=[user.pk]) in html
