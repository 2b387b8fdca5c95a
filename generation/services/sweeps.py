"""Sweeping (beat, periodically): jobs whose worker stopped renewing its lease, stranded queues."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing import services as billing
from generation import events
from generation.models import Job, JobState
from generation.services import wakeup
from generation.services.queue import finish

logger = logging.getLogger(__name__)


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
        wakeup.wake_workers()
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
        wakeup.wake_workers()
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
        billing.credits_release(subject=job.billing_subject, reason="Job cancelled")
        finish(job, state=JobState.CANCELLED, error="Cancelled; its worker had stopped responding.")
        return "cancelled"
    if job.attempts >= settings.STUDIO_JOB_MAX_ATTEMPTS:
        reason = f"The worker stopped responding {job.attempts} times; gave up."
        billing.credits_release(subject=job.billing_subject, reason=reason)
        finish(job, state=JobState.FAILED, error=reason)
        return "failed"
    logger.warning("Job %s lost its worker %s (attempt %s); queueing it again", job.pk, job.lease_owner, job.attempts)
    Job.objects.filter(pk=job.pk).update(
        state=JobState.QUEUED, lease_owner="", lease_expires_at=None, progress_step=0
    )
    job.refresh_from_db()
    events.job_state_changed(job)
    return "requeued"
