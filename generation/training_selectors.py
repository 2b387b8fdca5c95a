"""Reads for the fine-tuning pages: a training as its pages and sockets show it, the loss curve's
points, the LoRA library (docs/fine-tuning.md, "Pages")."""

from __future__ import annotations

import json
import math

from django.db.models import Prefetch
from django.urls import reverse
from django.utils import timezone

from generation import permissions
from generation.models import Job, JobKind, LoRA, SDModel, Training, TrainingImage, private_model_folder
from generation.selectors import queue_position

# The loss chart's drawing box (the SVG's viewBox; static/js/loss-chart.js draws the same).
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 600, 180, 6


def trainings_for_user(user, *, limit: int = 60):
    """The user's own trainings, newest first (a training is the user's: it bills their wallet)."""
    return (Job.objects.visible_to(user).filter(user=user, kind=JobKind.TRAIN)
            .select_related("training", "training__lora").order_by("-created_at")[:limit])


def training_for_user(user, job_id) -> Job:
    """The training job if the user may see it; raises Job.DoesNotExist (a 404) otherwise."""
    images = Prefetch("training__images", queryset=TrainingImage.objects.order_by("index"))
    return (Job.objects.visible_to(user).filter(kind=JobKind.TRAIN)
            .select_related("training", "training__lora").prefetch_related(images).get(pk=job_id))


def loss_chart(losses, total_steps: int) -> dict:
    """The polyline of [[step, loss], ...] in the chart's box: x by step over the whole run, y
    from the lowest to the highest loss (a flat run is drawn in the middle)."""
    points = [(int(step), float(loss)) for step, loss in losses or [] if loss is not None and math.isfinite(loss)]
    chart = {"width": CHART_WIDTH, "height": CHART_HEIGHT, "points": "", "count": len(points),
             "low": None, "high": None, "last": points[-1] if points else None}
    if not points:
        return chart
    low, high = min(loss for _, loss in points), max(loss for _, loss in points)
    span = high - low or 1.0
    steps = max(total_steps, points[-1][0], 1)
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD

    def y(loss: float) -> float:
        return CHART_PAD + (inner_h / 2 if high == low else (high - loss) / span * inner_h)

    chart.update(low=low, high=high, points=" ".join(
        f"{CHART_PAD + step / steps * inner_w:.1f},{y(loss):.1f}" for step, loss in points))
    return chart


def sample_groups(job: Job) -> list[dict]:
    """Sample images by step, newest step first, each with the URL that serves it."""
    groups = []
    for entry in reversed(job.training.samples or []):
        step = entry.get("step")
        files = entry.get("files") or []
        urls = [reverse("generation:training_sample", args=[job.pk, step, index]) for index in range(len(files))]
        groups.append({"step": step, "urls": urls})
    return groups


def sample_file(job: Job, step: int, index: int) -> str | None:
    for entry in job.training.samples or []:
        if entry.get("step") == step:
            files = entry.get("files") or []
            return files[index] if 0 <= index < len(files) else None
    return None


def time_left(job: Job) -> float | None:
    """Seconds left by the pace so far (a page render; the socket's events bring the trainer's own)."""
    if job.state != "running" or not job.started_at or not job.progress_step:
        return None
    elapsed = (timezone.now() - job.started_at).total_seconds()
    return max(elapsed / job.progress_step * (job.steps - job.progress_step), 0.0)


def training_context(job: Job, user=None) -> dict:
    """What every rendering of a training needs (page, panel, websocket message)."""
    training = job.training
    losses = training.losses or []
    last_loss = losses[-1][1] if losses and job.state == "running" else None
    return {
        "job": job, "training": training, "queue_position": queue_position(job),
        "chart": loss_chart(losses, job.steps), "losses_json": json.dumps(losses, separators=(",", ":")),
        "live": {"queued": job.state == "queued", "loss": last_loss},
        "sample_groups": sample_groups(job), "eta": time_left(job),
        "lora": training.lora if training.lora_id else None,
        "model_variant": (SDModel.objects.filter(storage_folder=private_model_folder(job)).first()
                          if training.full_finetune and job.state == "succeeded" else None),
        "can_cancel": user is not None and permissions.can_cancel_job(user, job),
    }


def loras_for_user(user):
    """Mine and my teams' LoRAs: mine first, by name."""
    return LoRA.objects.visible_to(user).select_related("team", "owner").order_by("name", "created_at")


def lora_for_user(user, lora_id) -> LoRA:
    return LoRA.objects.visible_to(user).select_related("team", "owner").get(pk=lora_id)


def lora_made_by(lora: LoRA) -> Training | None:
    return Training.objects.filter(lora=lora).select_related("job").first()
