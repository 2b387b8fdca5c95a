"""How generation's spending looks from billing: a job's credits are held under `job:<uuid>`
(`Job.billing_subject`).

Billing never imports this; the composition root names `live_job_ids` in
settings.BILLING_SUBJECTS, so `manage.py billing_check` can ask which job holds are still due.
"""

from __future__ import annotations

import uuid

from generation.models import Job

def live_job_ids(ids: list[str]) -> set[str]:
    """The ids (as given) of jobs that may still hold credits: those queued or running."""
    by_uuid = {}
    for ident in ids:
        try:
            by_uuid[uuid.UUID(ident)] = ident
        except ValueError:
            continue  # not a job id we ever wrote: not live
    active = Job.objects.filter(pk__in=list(by_uuid)).active().values_list("pk", flat=True)
    return {by_uuid[pk] for pk in active}
