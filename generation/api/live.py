"""A job's live progress as the API reports it: step of total, an ETA and the latest preview.

While a job runs, the worker's latest step and preview are in the shared cache (events.job_progress
remembers them), so reading them costs one cache round trip and no database query; the row's
progress_step (written at each heartbeat) is the fallback when the cache has nothing.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from django.core.cache import cache
from django.urls import reverse

from generation import events
from generation.models import Job, JobState


@dataclass(frozen=True)
class LiveProgress:
    step: int
    total_steps: int
    eta_seconds: float | None  # None: not started, or not yet measurable
    preview_url: str | None  # the latest denoising preview, while running


def _remembered(job_id) -> tuple[dict | None, bool]:
    step_key, preview_key = events.live_keys(job_id)
    found = cache.get_many([step_key, preview_key])
    return found.get(step_key), preview_key in found


def live_progress(job: Job) -> LiveProgress:
    if job.state != JobState.RUNNING:
        step = job.steps if job.state == JobState.SUCCEEDED else job.progress_step
        return LiveProgress(step=step, total_steps=job.steps, eta_seconds=None, preview_url=None)
    latest, has_preview = _remembered(job.pk)
    step, eta = job.progress_step, None
    if latest and latest.get("step", 0) >= step:
        step = latest["step"]
        if step:
            eta = round(latest["elapsed"] / step * max(job.steps - step, 0), 1)
    preview_url = reverse("api:generation_preview", args=[job.pk]) if has_preview else None
    return LiveProgress(step=step, total_steps=job.steps, eta_seconds=eta, preview_url=preview_url)


def latest_preview(job_id) -> tuple[bytes, str] | None:
    """The latest preview frame of a running job: (bytes, mime type), or None."""
    data_url = cache.get(events.live_keys(job_id)[1])
    if not data_url or not data_url.startswith("data:"):
        return None
    header, _, encoded = data_url.partition(",")
    try:
        return base64.b64decode(encoded, validate=True), header[5:].split(";")[0] or "image/png"
    except (binascii.Error, ValueError):
        return None
