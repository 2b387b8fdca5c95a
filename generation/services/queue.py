"""Claiming and running jobs (worker side). Every write is fenced by the worker's lease."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Count, F, FloatField, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from billing import services as billing
from generation import events, permissions
from generation.models import Image, Job, JobKind, JobMode, JobState


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


def lease_expiry():
    return timezone.now() + timedelta(seconds=settings.STUDIO_JOB_LEASE_SECONDS)


def _per_account(queryset, field: str):
    """For a queued job (OuterRef): a value over the jobs of its account, by `field` ("user" or "team")."""
    return queryset.values(field).annotate(n=Count("pk")).values("n")


def _account_value(user_value, team_value, default):
    """The value of the job's account: its team's when the team's wallet pays, else its user's."""
    return Case(When(billed_to_team=True, then=Coalesce(team_value, default)), default=Coalesce(user_value, default))


def _fair_queue(kinds, models=()):
    """Queued jobs of `kinds` in fair-share order (docs/teams.md, "Fair share").

    Who takes turns is an account: a team for the jobs its wallet pays, else the user (so a team
    of many members is one account, and a user with many jobs is one). Accounts with fewer running
    jobs per unit of weight go first (Team.queue_weight; a user weighs 1), then those with fewer
    jobs started in the last STUDIO_FAIR_SHARE_WINDOW_SECONDS per weight (a team of weight 2 gets
    two turns for a user's one), then the one served longest ago, then the oldest job. Over every
    kind: a user's running training counts against their next generation, and back.
    """
    since = timezone.now() - timedelta(seconds=settings.STUDIO_FAIR_SHARE_WINDOW_SECONDS)
    mine = Job.objects.filter(user=OuterRef("user"), billed_to_team=False)
    teams = Job.objects.filter(team=OuterRef("team"), billed_to_team=True)
    running = _account_value(Subquery(_per_account(mine.filter(state=JobState.RUNNING), "user")),
                             Subquery(_per_account(teams.filter(state=JobState.RUNNING), "team")), 0)
    recent = _account_value(Subquery(_per_account(mine.filter(started_at__gte=since), "user")),
                            Subquery(_per_account(teams.filter(started_at__gte=since), "team")), 0)
    last_started = _account_value(
        Subquery(mine.filter(started_at__isnull=False).order_by("-started_at").values("started_at")[:1]),
        Subquery(teams.filter(started_at__isnull=False).order_by("-started_at").values("started_at")[:1]), None)
    weight = Case(When(billed_to_team=True, then=Cast("team__queue_weight", FloatField())), default=Value(1.0))
    return (
        _queued(kinds, models)
        .annotate(account_weight=weight,
                  account_running=Cast(running, FloatField()) / F("account_weight"),
                  account_recent=Cast(recent, FloatField()) / F("account_weight"),
                  account_last_started=last_started)
        .order_by("account_running", "account_recent", F("account_last_started").asc(nulls_first=True),
                  "created_at")
    )


def _next_candidate(kinds, models=()) -> Job | None:
    """The fair-share next job; with one job waiting, that one (without the ordering's subqueries:
    the usual case at low load, where a job's latency shows most)."""
    waiting = list(_queued(kinds, models).only("pk")[:2])
    if len(waiting) < 2:
        return waiting[0] if waiting else None
    return _fair_queue(kinds, models).only("pk").first()


def _queued(kinds, models=()):
    """Queued jobs of `kinds` (a worker limited to some models: their generation jobs only,
    trainings as before)."""
    queued = Job.objects.filter(state=JobState.QUEUED, kind__in=kinds)
    if models:
        queued = queued.filter(Q(kind=JobKind.TRAIN) | Q(model__name__in=models))
    return queued


def _claim(job_id, worker_id: str) -> Lease | None:
    """The conditional UPDATE that takes a queued job (None: someone else took it, or it was
    cancelled): two workers racing for the same job cannot both win, on SQLite or PostgreSQL,
    without row locks."""
    with transaction.atomic():
        claimed = Job.objects.filter(pk=job_id, state=JobState.QUEUED).update(
            state=JobState.RUNNING, lease_owner=worker_id, lease_expires_at=lease_expiry(),
            attempts=F("attempts") + 1, started_at=timezone.now(), progress_step=0,
        )
        if not claimed:
            return None
        job = Job.objects.get(pk=job_id)
        events.job_state_changed(job)
        return Lease(job_id=job.pk, worker_id=worker_id, attempt=job.attempts)


def job_claim_next(*, worker_id: str, kinds=(JobKind.GENERATE,), models=()) -> Lease | None:
    """Take the next queued job of one of `kinds` for this worker, or None when there is none.
    A worker asks for the kinds it runs (generation.worker derives them from its Celery queues)
    and, when limited to some models (STUDIO_WORKER_MODELS), for their names: it never claims a
    generation job of another model.

    The claim is a conditional UPDATE (state must still be QUEUED), so two workers racing for the
    same job cannot both win, on SQLite or PostgreSQL, without row locks.
    """
    for _ in range(10):
        candidate = _next_candidate(list(kinds), list(models))
        if candidate is None:
            return None
        lease = _claim(candidate.pk, worker_id)
        if lease is not None:
            return lease
        # someone else took it or it was cancelled; look again
    return None


def lora_set_key(loras) -> tuple:
    """A Job.loras snapshot as what a batch must share: the same LoRAs (id, sha256) at the same weights."""
    return tuple(sorted((str(entry.get("id")), entry.get("sha256", ""), float(entry.get("weight", 1.0)))
                        for entry in loras or []))


def job_claim_batch(*, worker_id: str, kinds=(JobKind.GENERATE,), models=(), max_jobs: int | None = None,
                    max_images: int | None = None) -> list[Lease]:
    """Claim the fair-share next job (job_claim_next), then fill a batch with queued jobs that can
    run with it on the UNet at once, in the same fair-share order: after each claim its user has
    one more running job, so a batch takes one job per user per round and a user with many
    queued jobs never pushes out another's. Returns the leases, the first job's first; [] when
    nothing waits.

    Compatible: a text-to-image generation job of the same model, width, height, steps, sampler,
    guidance scale and LoRA set (lora_set_key). A canvas job or a training runs alone. At most
    `max_jobs` jobs (STUDIO_BATCH_MAX_JOBS) and `max_images` images (STUDIO_BATCH_MAX_IMAGES; the
    first job counts whatever its size); 1 turns batching off. Each claim is job_claim_next's
    conditional UPDATE; each job keeps its own lease.
    """
    max_jobs = settings.STUDIO_BATCH_MAX_JOBS if max_jobs is None else max_jobs
    max_images = settings.STUDIO_BATCH_MAX_IMAGES if max_images is None else max_images
    first = job_claim_next(worker_id=worker_id, kinds=kinds, models=models)
    if first is None:
        return []
    leases = [first]
    lead = Job.objects.get(pk=first.job_id)
    if lead.kind != JobKind.GENERATE or lead.uses_canvas or JobKind.GENERATE not in kinds:
        return leases
    images = lead.num_images
    loras = lora_set_key(lead.loras)
    compatible = Q(kind=JobKind.GENERATE, mode=JobMode.TXT2IMG, model_id=lead.model_id, width=lead.width,
                   height=lead.height, steps=lead.steps, sampler=lead.sampler, guidance_scale=lead.guidance_scale)
    passed_over: set = set()  # other LoRA sets, or taken by another worker meanwhile
    if max_jobs <= 1 or not Job.objects.filter(compatible, state=JobState.QUEUED).exists():
        return leases  # the usual case at low load: nothing to batch, no fair ordering to run
    while len(leases) < max_jobs and images < max_images:
        candidates = list(
            _fair_queue([JobKind.GENERATE], list(models))
            .filter(compatible, num_images__lte=max_images - images)
            .exclude(pk__in=passed_over)
            .only("pk", "loras", "num_images")[:20]
        )
        if not candidates:
            break
        picked = next((job for job in candidates if lora_set_key(job.loras) == loras), None)
        if picked is None:
            passed_over.update(job.pk for job in candidates)
            continue
        lease = _claim(picked.pk, worker_id)
        if lease is None:
            passed_over.add(picked.pk)
            continue
        leases.append(lease)
        images += picked.num_images
    return leases


def _leased(lease: Lease):
    return Job.objects.filter(
        pk=lease.job_id, state=JobState.RUNNING, lease_owner=lease.worker_id, attempts=lease.attempt
    )


def job_heartbeat(*, lease: Lease, progress_step: int) -> bool:
    """Extend the lease and record progress. Returns True if the user asked to cancel."""
    if not _leased(lease).update(lease_expires_at=lease_expiry(), progress_step=progress_step):
        raise LeaseLost(f"Job {lease.job_id} is no longer leased to {lease.worker_id}")
    return Job.objects.filter(pk=lease.job_id).values_list("cancel_requested", flat=True).get()


def _locked_leased_job(lease: Lease) -> Job:
    job = _leased(lease).select_for_update().first()
    if job is None:
        raise LeaseLost(f"Job {lease.job_id} is no longer leased to {lease.worker_id}")
    return job


def finish(job: Job, *, state: str, error: str = "", **fields) -> None:
    Job.objects.filter(pk=job.pk).update(
        state=state, error=error, finished_at=timezone.now(), lease_owner="", lease_expires_at=None, **fields
    )
    job.refresh_from_db()
    events.job_state_changed(job)


def charge_for_produced(job: Job, produced: int) -> int:
    """What a job is charged: its quoted and reserved cost, pro rata for the images produced,
    rounded down (in the user's favour). Never today's prices: those may have changed since."""
    produced = max(0, min(produced, job.num_images))
    return job.cost * produced // job.num_images


@transaction.atomic
def job_succeed(*, lease: Lease, images: list[StoredImage], engine_seconds: float) -> Job:
    """Record the images, capture the credits for what was produced, mark SUCCEEDED."""
    job = _locked_leased_job(lease)
    team_id = job.team_id if job.team_id and permissions.may_save_into_team(job.user, job.team_id) else None
    created = Image.objects.bulk_create(
        Image(
            job=job, owner_id=job.user_id, team_id=team_id, index=image.index, seed=image.seed, width=image.width,
            height=image.height, file=image.file_name, thumbnail=image.thumbnail_name, infotext=image.infotext,
        )
        for image in images
    )
    events.image_added(images=created)  # open galleries show them on commit
    billing.credits_capture(subject=job.billing_subject, amount=charge_for_produced(job, len(images)))
    finish(job, state=JobState.SUCCEEDED, progress_step=job.steps, engine_seconds=engine_seconds)
    return job


@transaction.atomic
def job_fail(*, lease: Lease, reason: str) -> Job:
    job = _locked_leased_job(lease)
    billing.credits_release(subject=job.billing_subject, reason=f"Job failed: {reason}"[:200])
    finish(job, state=JobState.FAILED, error=reason)
    return job


@transaction.atomic
def job_mark_cancelled(*, lease: Lease) -> Job:
    """The worker stopped the pipeline because the user asked to cancel."""
    job = _locked_leased_job(lease)
    billing.credits_release(subject=job.billing_subject, reason="Job cancelled")
    finish(job, state=JobState.CANCELLED, error="Cancelled while running.")
    return job
