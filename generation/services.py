"""Every change to a Job goes through here, with its credits and its real-time event.

The Job table is the queue of record. A worker holds a lease on a running job (owner, expiry,
attempt); every write a worker makes is fenced by that lease, so a worker that was presumed dead
and comes back can never finish a job a second time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing import services as billing
from generation import events
from generation.models import Image, Job, JobState
from generation.selectors import model_info

logger = logging.getLogger(__name__)


class TooManyActiveJobs(Exception):
    pass


class LeaseLost(Exception):
    """The worker no longer owns the job: it was swept, or finished by another attempt."""


@dataclass(frozen=True)
class Lease:
    job_id: object
    worker_id: str
    attempt: int


@dataclass(frozen=True)
class StoredImage:
    index: int
    seed: int
    width: int
    height: int
    file_name: str
    thumbnail_name: str
    infotext: str


def _lease_expiry():
    return timezone.now() + timedelta(seconds=settings.STUDIO_JOB_LEASE_SECONDS)


def _wake_workers() -> None:
    """Tell a worker there is work. Only a hint: the job is already safe in the database."""
    from generation.tasks import process_queue

    try:
        process_queue.delay()
    except Exception:  # broker down: the worker drains the queue when it (re)starts
        logger.exception("Could not wake a worker")


# --- Submitting and cancelling (web side) --------------------------------------------------------


@transaction.atomic
def job_submit(*, user, prompt: str, negative_prompt: str, width: int, height: int, steps: int,
               guidance_scale: float, sampler: str, seed: int, num_images: int) -> Job:
    """Create a QUEUED job and reserve its credits in one transaction; wake a worker on commit.

    Raises billing.InsufficientCredits or TooManyActiveJobs, in which case nothing is written.
    """
    active = Job.objects.filter(user=user).active().count()
    if active >= settings.STUDIO_MAX_ACTIVE_JOBS_PER_USER:
        raise TooManyActiveJobs(
            f"You already have {active} jobs waiting or running; wait for one to finish or cancel one."
        )
    info = model_info()
    cost = billing.job_price(width=width, height=height, steps=steps, num_images=num_images, model_name=info.name)
    job = Job.objects.create(
        user=user, prompt=prompt, negative_prompt=negative_prompt, width=width, height=height, steps=steps,
        guidance_scale=guidance_scale, sampler=sampler, seed=seed, num_images=num_images,
        model_name=info.name, model_hash=info.hash, cost=cost,
    )
    billing.credits_reserve(job=job, amount=cost)
    events.job_state_changed(job)
    transaction.on_commit(_wake_workers)
    return job


@transaction.atomic
def job_cancel(*, job: Job) -> Job:
    """Cancel a queued job at once; ask the worker of a running one to stop at its next step."""
    now = timezone.now()
    if Job.objects.filter(pk=job.pk, state=JobState.QUEUED).update(
        state=JobState.CANCELLED, finished_at=now, error="Cancelled before it started."
    ):
        job.refresh_from_db()
        billing.credits_release(job=job, reason="Job cancelled")
        events.job_state_changed(job)
    elif Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(cancel_requested=True):
        job.refresh_from_db()
        events.job_state_changed(job)
    else:
        job.refresh_from_db()
    return job


# --- Claiming and running (worker side) ----------------------------------------------------------


def _next_candidate() -> Job | None:
    """Fair share: the user with the fewest running jobs, then the one served longest ago."""
    running = (
        Job.objects.filter(user=OuterRef("user"), state=JobState.RUNNING)
        .values("user").annotate(n=Count("pk")).values("n")
    )
    last_started = (
        Job.objects.filter(user=OuterRef("user"), started_at__isnull=False)
        .order_by("-started_at").values("started_at")[:1]
    )
    return (
        Job.objects.filter(state=JobState.QUEUED)
        .annotate(user_running=Coalesce(Subquery(running), 0), user_last_started=Subquery(last_started))
        .order_by("user_running", F("user_last_started").asc(nulls_first=True), "created_at")
        .only("pk")
        .first()
    )


def job_claim_next(*, worker_id: str) -> Lease | None:
    """Take the next queued job for this worker, or None when the queue is empty.

    The claim is a conditional UPDATE (state must still be QUEUED), so two workers racing for the
    same job cannot both win, on SQLite or PostgreSQL, without row locks.
    """
    for _ in range(10):
        candidate = _next_candidate()
        if candidate is None:
            return None
        with transaction.atomic():
            now = timezone.now()
            claimed = Job.objects.filter(pk=candidate.pk, state=JobState.QUEUED).update(
                state=JobState.RUNNING, lease_owner=worker_id, lease_expires_at=_lease_expiry(),
                attempts=F("attempts") + 1, started_at=now, progress_step=0,
            )
            if not claimed:
                continue  # someone else took it or it was cancelled; look again
            job = Job.objects.get(pk=candidate.pk)
            events.job_state_changed(job)
            return Lease(job_id=job.pk, worker_id=worker_id, attempt=job.attempts)
    return None


def _leased(lease: Lease):
    return Job.objects.filter(
        pk=lease.job_id, state=JobState.RUNNING, lease_owner=lease.worker_id, attempts=lease.attempt
    )


def job_heartbeat(*, lease: Lease, progress_step: int) -> bool:
    """Extend the lease and record progress. Returns True if the user asked to cancel."""
    if not _leased(lease).update(lease_expires_at=_lease_expiry(), progress_step=progress_step):
        raise LeaseLost(f"Job {lease.job_id} is no longer leased to {lease.worker_id}")
    return Job.objects.filter(pk=lease.job_id).values_list("cancel_requested", flat=True).get()


def _locked_leased_job(lease: Lease) -> Job:
    job = _leased(lease).select_for_update().first()
    if job is None:
        raise LeaseLost(f"Job {lease.job_id} is no longer leased to {lease.worker_id}")
    return job


def _finish(job: Job, *, state: str, error: str = "", **fields) -> None:
    Job.objects.filter(pk=job.pk).update(
        state=state, error=error, finished_at=timezone.now(), lease_owner="", lease_expires_at=None, **fields
    )
    job.refresh_from_db()
    events.job_state_changed(job)


@transaction.atomic
def job_succeed(*, lease: Lease, images: list[StoredImage], engine_seconds: float) -> Job:
    """Record the images, capture the credits for what was produced, mark SUCCEEDED."""
    job = _locked_leased_job(lease)
    Image.objects.bulk_create(
        Image(
            job=job, owner_id=job.user_id, index=image.index, seed=image.seed, width=image.width,
            height=image.height, file=image.file_name, thumbnail=image.thumbnail_name, infotext=image.infotext,
        )
        for image in images
    )
    produced_cost = billing.job_price(
        width=job.width, height=job.height, steps=job.steps, num_images=len(images), model_name=job.model_name
    ) if images else 0
    billing.credits_capture(job=job, amount=min(produced_cost, job.cost))
    _finish(job, state=JobState.SUCCEEDED, progress_step=job.steps, engine_seconds=engine_seconds)
    return job


@transaction.atomic
def job_fail(*, lease: Lease, reason: str) -> Job:
    job = _locked_leased_job(lease)
    billing.credits_release(job=job, reason=f"Job failed: {reason}"[:200])
    _finish(job, state=JobState.FAILED, error=reason)
    return job


@transaction.atomic
def job_mark_cancelled(*, lease: Lease) -> Job:
    """The worker stopped the pipeline because the user asked to cancel."""
    job = _locked_leased_job(lease)
    billing.credits_release(job=job, reason="Job cancelled")
    _finish(job, state=JobState.CANCELLED, error="Cancelled while running.")
    return job


# --- Sweeping (any process, periodically) --------------------------------------------------------


def jobs_sweep_expired() -> dict[str, int]:
    """Jobs whose worker stopped renewing its lease: run them again, or give up with a reason."""
    counts = {"requeued": 0, "failed": 0, "cancelled": 0}
    expired_ids = list(
        Job.objects.filter(state=JobState.RUNNING, lease_expires_at__lt=timezone.now()).values_list("pk", flat=True)
    )
    for job_id in expired_ids:
        outcome = _sweep_one(job_id)
        if outcome:
            counts[outcome] += 1
    if counts["requeued"]:
        _wake_workers()
    return counts


def jobs_wake_if_stranded() -> bool:
    """Wake a worker when jobs wait and nothing runs: their wake-up message was lost (the broker
    was briefly down at submit time). Otherwise they would wait for the next submit or a worker
    restart. Jobs waiting behind a running one are left to the busy worker's claim loop."""
    waiting_since = timezone.now() - timedelta(seconds=2 * settings.STUDIO_SWEEP_INTERVAL_SECONDS)
    stranded = (Job.objects.filter(state=JobState.QUEUED, created_at__lt=waiting_since).exists()
                and not Job.objects.filter(state=JobState.RUNNING).exists())
    if stranded:
        logger.warning("Jobs are queued but none is running: waking a worker")
        _wake_workers()
    return stranded


@transaction.atomic
def _sweep_one(job_id) -> str | None:
    job = (
        Job.objects.select_for_update()
        .filter(pk=job_id, state=JobState.RUNNING, lease_expires_at__lt=timezone.now())
        .first()
    )
    if job is None:
        return None  # renewed or finished in the meantime
    if job.cancel_requested:
        billing.credits_release(job=job, reason="Job cancelled")
        _finish(job, state=JobState.CANCELLED, error="Cancelled; its worker had stopped responding.")
        return "cancelled"
    if job.attempts >= settings.STUDIO_JOB_MAX_ATTEMPTS:
        reason = f"The worker stopped responding {job.attempts} times; gave up."
        billing.credits_release(job=job, reason=reason)
        _finish(job, state=JobState.FAILED, error=reason)
        return "failed"
    logger.warning("Job %s lost its worker %s (attempt %s); queueing it again", job.pk, job.lease_owner, job.attempts)
    Job.objects.filter(pk=job.pk).update(
        state=JobState.QUEUED, lease_owner="", lease_expires_at=None, progress_step=0
    )
    job.refresh_from_db()
    events.job_state_changed(job)
    return "requeued"
