"""Jobs and the images they produce. The Job table is the queue of record.

State changes happen only in `generation.services`; these classes hold data and queries.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from generation.engine.contracts import SAMPLERS, GenerationRequest


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
# The Job fields that say what to make: exactly the engine's GenerationRequest, by name.
REQUEST_FIELDS = (
    "prompt", "negative_prompt", "width", "height", "steps", "guidance_scale", "sampler", "seed", "num_images",
)


class JobNotDeletable(Exception):
    """A job that still holds credits (queued, running, or an unsettled hold) is not deleted."""


class JobQuerySet(models.QuerySet):
    def visible_to(self, user) -> JobQuerySet:
        """Jobs a user may see: their own. Everyone else gets a 404."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(user=user)

    def active(self) -> JobQuerySet:
        return self.filter(state__in=[JobState.QUEUED, JobState.RUNNING])

    def delete(self):
        """Queued and running jobs hold credits: they are never deleted behind the services' back."""
        if self.active().exists():
            raise JobNotDeletable("Queued or running jobs cannot be deleted: cancel them first.")
        return super().delete()


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED, db_index=True)

    # What to make (plain data, handed to the engine as a GenerationRequest).
    prompt = models.TextField(max_length=1000)
    negative_prompt = models.TextField(max_length=1000, blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    steps = models.PositiveIntegerField()
    guidance_scale = models.FloatField()
    sampler = models.CharField(max_length=32, choices=list(SAMPLERS.items()))
    seed = models.BigIntegerField()
    num_images = models.PositiveSmallIntegerField()
    model_name = models.CharField(max_length=200)
    model_hash = models.CharField(max_length=64, blank=True)
    cost = models.PositiveIntegerField(default=0, help_text="Credits reserved for this job.")

    # Lease: who runs it and until when. An expired lease means the worker is presumed dead.
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)

    # Progress (written at heartbeat cadence; live progress goes over the channel layer).
    progress_step = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    engine_seconds = models.FloatField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["state", "created_at"], name="job_queue_idx"),
            models.Index(fields=["user", "-created_at"], name="job_user_recent_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(num_images__gte=1) & Q(num_images__lte=4), name="job_num_images_1_4"),
            models.CheckConstraint(condition=Q(steps__gte=1) & Q(steps__lte=150), name="job_steps_1_150"),
        ]

    def __str__(self) -> str:
        return f"Job {self.id} ({self.state})"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def is_active(self) -> bool:
        return not self.is_final

    @property
    def billing_subject(self) -> str:
        """What billing holds this job's credits under (`job:<uuid>`)."""
        return f"job:{self.pk}"

    def delete(self, *args, **kwargs):
        if self.is_active:
            raise JobNotDeletable(f"Job {self.pk} is {self.state}: cancel it first (generation.services.job_delete).")
        return super().delete(*args, **kwargs)

    def generation_request(self) -> GenerationRequest:
        return GenerationRequest(**{name: getattr(self, name) for name in REQUEST_FIELDS})

    @property
    def progress_percent(self) -> int:
        if self.state == JobState.SUCCEEDED:
            return 100
        return int(100 * self.progress_step / self.steps) if self.steps else 0


class ImageQuerySet(models.QuerySet):
    def visible_to(self, user) -> ImageQuerySet:
        """Images a user may see: their own. Private images are never served to anyone else."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(owner=user)


class Image(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="images")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="images")
    index = models.PositiveSmallIntegerField()
    seed = models.BigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    file = models.FileField(max_length=300)
    thumbnail = models.FileField(max_length=300, blank=True)
    infotext = models.TextField(help_text="The A1111 'parameters' text embedded in the PNG.")
    favourite = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ImageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "index"]
        indexes = [
            # The gallery's keyset: one user's images by (created_at, id), either direction.
            models.Index(fields=["owner", "created_at", "id"], name="image_gallery_keyset_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="image_unique_job_index"),
        ]

    def __str__(self) -> str:
        return f"Image {self.id}"
