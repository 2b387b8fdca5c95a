"""Sweeping (beat, periodically): jobs whose worker stopped renewing its lease, stranded queues,
abandoned drafts of new trainings."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from billing import services as billing
from generation import events
from generation.models import Job, JobKind, JobState, model_queue
from generation.services import training, wakeup
from generation.services.files import files_delete_now
from generation.services.queue import finish

logger = logging.getLogger(__name__)


def jobs_sweep_expired() -> dict[str, int]:
    """Jobs whose worker stopped renewing its lease: run them again, or give up with a reason."""
    counts = {"requeued": 0, "failed": 0, "cancelled": 0}
    expired = list(
        Job.objects.filter(state=JobState.RUNNING, lease_expires_at__lt=timezone.now()).values_list("pk", "kind")
    )
    requeued_kinds = set()
    for job_id, kind in expired:
        outcome = _sweep_one(job_id)
        if outcome:
            counts[outcome] += 1
        if outcome == "requeued":
            requeued_kinds.add(kind)
    if requeued_kinds:
        _wake(sorted(requeued_kinds))
    return counts


def _wake(kinds) -> None:
    """Wake the workers of these kinds; for generation, those of every model with queued jobs
    (a worker limited to some models consumes only their queues, SDModel.queue)."""
    if JobKind.GENERATE in kinds:
        queues = set(Job.objects.filter(state=JobState.QUEUED, kind=JobKind.GENERATE, model__isnull=False)
                     .values_list("model__name", flat=True))
        for name in sorted(queues):
            wakeup.wake_workers(queue=model_queue(name))
    wakeup.wake_workers(kinds=kinds)


def jobs_wake_if_stranded() -> bool:
    """Wake a worker when jobs wait and nothing runs: their wake-up message was lost (the broker
    was briefly down at submit time). Otherwise they would wait for the next submit or a worker
    restart. Jobs waiting behind a running one are left to the busy worker's claim loop.
    Per kind: generation and training workers may be separate (their own Celery queues)."""
    waiting_since = timezone.now() - timedelta(seconds=2 * settings.STUDIO_SWEEP_INTERVAL_SECONDS)
    stranded = [
        kind for kind in JobKind.values
        if Job.objects.filter(state=JobState.QUEUED, kind=kind, created_at__lt=waiting_since).exists()
        and not Job.objects.filter(state=JobState.RUNNING, kind=kind).exists()
    ]
    if stranded:
        logger.warning("Jobs (%s) are queued but none of them is running: waking a worker", ", ".join(stranded))
        _wake(stranded)
    return bool(stranded)


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
        if job.kind == JobKind.TRAIN:  # charged for its last checkpoint, whose LoRA it keeps
            training.settle_cancelled_training(job, error="Cancelled; its worker had stopped responding.")
            return "cancelled"
        billing.credits_release(subject=job.billing_subject, reason="Job cancelled")
        finish(job, state=JobState.CANCELLED, error="Cancelled; its worker had stopped responding.")
        return "cancelled"
    if job.attempts >= settings.STUDIO_JOB_MAX_ATTEMPTS:
        reason = f"The worker stopped responding {job.attempts} times; gave up."
        billing.credits_release(subject=job.billing_subject, reason=reason)
        if job.kind == JobKind.TRAIN:
            training.drop_checkpoint_of_failed(job)
        finish(job, state=JobState.FAILED, error=reason)
        return "failed"
    # A training keeps its checkpoint (Training.checkpoint_*): the next attempt resumes from it.
    logger.warning("Job %s lost its worker %s (attempt %s); queueing it again", job.pk, job.lease_owner, job.attempts)
    Job.objects.filter(pk=job.pk).update(
        state=JobState.QUEUED, lease_owner="", lease_expires_at=None, progress_step=0
    )
    job.refresh_from_db()
    events.job_state_changed(job)
    return "requeued"


TRAINING_DRAFTS = "training-drafts"  # <user>/<draft>/<index>.png: step 1 of a new training (training_views)


def training_drafts_sweep_abandoned(*, now=None) -> int:
    """Remove the pictures of new-training drafts nobody finished: a draft whose newest file is
    older than STUDIO_TRAINING_DRAFT_MAX_AGE_HOURS (its page then starts again at step 1).
    Returns how many drafts went."""
    cutoff = (now or timezone.now()) - timedelta(hours=settings.STUDIO_TRAINING_DRAFT_MAX_AGE_HOURS)
    removed = 0
    for user_folder in _subfolders(TRAINING_DRAFTS):
        for draft in _subfolders(user_folder):
            files = [f"{draft}/{name}" for name in default_storage.listdir(draft)[1]]
            if all(default_storage.get_modified_time(name) < cutoff for name in files):
                files_delete_now(files)
                removed += 1
    return removed


def _subfolders(folder: str) -> list[str]:
    try:
        return [f"{folder}/{name}" for name in default_storage.listdir(folder)[0]]
    except FileNotFoundError:
        return []
