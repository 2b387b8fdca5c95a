"""A job's live progress as the API reports it: step of total, an ETA and the latest preview.

`live_progress(job)` is what GET /generations/{id} (and A1111's /progress) put in their answers.
This first version reads the job row only (no ETA before the first step, no preview); the
progress-stream work replaces its insides, keeping the signature and the fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone

from generation.models import Job, JobState


@dataclass(frozen=True)
class LiveProgress:
    step: int
    total_steps: int
    eta_seconds: float | None  # None: not started, or not yet measurable
    preview_url: str | None  # the latest denoising preview, while running


def live_progress(job: Job) -> LiveProgress:
    eta = None
    if job.state == JobState.RUNNING and job.started_at and job.progress_step:
        elapsed = (timezone.now() - job.started_at).total_seconds()
        eta = round(elapsed / job.progress_step * max(job.steps - job.progress_step, 0), 1)
    return LiveProgress(step=job.progress_step, total_steps=job.steps, eta_seconds=eta, preview_url=None)
