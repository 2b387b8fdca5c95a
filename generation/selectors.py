"""Reads for the generation app: which model serves, what a user may see, queue positions."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from django.conf import settings

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


def jobs_for_user(user, *, limit: int = 12):
    return Job.objects.visible_to(user).prefetch_related("images")[:limit]


def job_for_user(user, job_id) -> Job:
    """The job if the user may see it; raises Job.DoesNotExist (a 404) otherwise."""
    return Job.objects.visible_to(user).prefetch_related("images").get(pk=job_id)


def image_for_user(user, image_id) -> Image:
    return Image.objects.visible_to(user).select_related("job").get(pk=image_id)


def queue_position(job: Job) -> int | None:
    """1-based position among queued jobs (oldest first), or None once the job left the queue."""
    if job.state != JobState.QUEUED:
        return None
    return Job.objects.filter(state=JobState.QUEUED, created_at__lt=job.created_at).count() + 1


def job_context(job: Job) -> dict:
    """What every rendering of a job needs (page, fragment, websocket message)."""
    images = list(job.images.all())
    return {"job": job, "images": images, "queue_position": queue_position(job)}
