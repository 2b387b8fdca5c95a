"""Reads for the generation app: which model serves, what a user may see, queue positions."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.db.models import Count, Max, Min, Prefetch

from generation.engine.contracts import ModelInfo
from generation.engine.model_info import read_model_info
from generation.models import Image, Job, JobState

SHIPPED_MODEL_DIR = Path(settings.BASE_DIR) / "generation" / "engine" / "weights" / "studio-tiny"


def model_path() -> Path:
    """STUDIO_MODEL_PATH if set; else the trained demo model we ship; else the built one under var/."""
    if settings.STUDIO_MODEL_PATH:
        return Path(settings.STUDIO_MODEL_PATH)
    if (SHIPPED_MODEL_DIR / "model_index.json").exists():
        return SHIPPED_MODEL_DIR
    return Path(settings.STUDIO_DEMO_MODEL_DIR)


@lru_cache(maxsize=4)
def _model_info_at(path: str) -> ModelInfo:
    return read_model_info(path)


def model_info() -> ModelInfo:
    return _model_info_at(str(model_path()))


def _images_in_order() -> Prefetch:
    """A job's images in the order they were asked for (seed, seed+1, ...), never by save time:
    the images of one job are saved microseconds apart, and sorting newest first reverses them."""
    return Prefetch("images", queryset=Image.objects.order_by("index"))


def jobs_for_user(user, *, limit: int = 12):
    return Job.objects.visible_to(user).prefetch_related(_images_in_order())[:limit]


def job_for_user(user, job_id) -> Job:
    """The job if the user may see it; raises Job.DoesNotExist (a 404) otherwise."""
    return Job.objects.visible_to(user).prefetch_related(_images_in_order()).get(pk=job_id)


def image_for_user(user, image_id) -> Image:
    return Image.objects.visible_to(user).select_related("job").get(pk=image_id)


def queue_position(job: Job) -> int | None:
    """1-based place of a queued job in the order the fair-share claim will run it, or None once
    it left the queue.

    The claim (services.job_claim_next) takes turns between users: each round, every user with
    queued jobs gets one, users served longest ago first. My k-th queued job therefore runs after
    my k-1 earlier ones and, of every other user, up to k jobs if they come before me in a round
    (else up to k-1), however recently they were queued. An estimate: jobs submitted later by a
    user who comes before me in the rotation can still move ahead.
    """
    if job.state != JobState.QUEUED:
        return None
    queued = Job.objects.filter(state=JobState.QUEUED)
    my_turn = queued.filter(user_id=job.user_id, created_at__lt=job.created_at).count() + 1
    others = {
        user_id: (waiting, oldest)
        for user_id, waiting, oldest in queued.exclude(user_id=job.user_id)
        .values_list("user").annotate(n=Count("pk"), oldest=Min("created_at"))
    }
    if not others:
        return my_turn
    last_started = dict(
        Job.objects.filter(user_id__in=[job.user_id, *others], started_at__isnull=False)
        .values_list("user").annotate(last=Max("started_at"))
    )
    mine = last_started.get(job.user_id)
    ahead = my_turn - 1
    for user_id, (waiting, oldest) in others.items():
        theirs = last_started.get(user_id)
        if theirs == mine:  # both never served: the older job goes first
            before_me = oldest < job.created_at
        else:
            before_me = theirs is None or (mine is not None and theirs < mine)
        ahead += min(waiting, my_turn if before_me else my_turn - 1)
    return ahead + 1


def lease_owners_running(*, prefix: str) -> list[str]:
    """The workers whose id starts with `prefix` and that hold the lease of a running job."""
    return list(
        Job.objects.filter(state=JobState.RUNNING, lease_owner__startswith=prefix)
        .order_by().values_list("lease_owner", flat=True).distinct()
    )


def job_context(job: Job) -> dict:
    """What every rendering of a job needs (page, fragment, websocket message)."""
    images = sorted(job.images.all(), key=lambda image: image.index)
    return {"job": job, "images": images, "queue_position": queue_position(job)}
