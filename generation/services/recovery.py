"""Leases of workers known to be gone (worker start-up): their jobs run again at once.

A lease normally ends when its worker stops renewing it (STUDIO_JOB_LEASE_SECONDS, then beat's
sweep). When a worker restarts on the same host, it can tell that the processes which held some
leases no longer exist, so those jobs need not wait out their leases.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from generation.models import Job, JobState
from generation.services.sweeps import jobs_sweep_expired


def jobs_release_leases_of(*, owners: list[str]) -> dict[str, int]:
    """End now the leases of these (dead) workers, then sweep: their jobs are re-queued (or failed,
    after the last attempt) exactly as if the leases had expired."""
    if not owners:
        return {"requeued": 0, "failed": 0, "cancelled": 0}
    Job.objects.filter(state=JobState.RUNNING, lease_owner__in=owners).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    return jobs_sweep_expired()
