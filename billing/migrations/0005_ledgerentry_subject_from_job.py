"""Fill LedgerEntry.subject (`job:<uuid>`) for the entries that pointed to a job.

The job id comes from the foreign key, or, where the job was deleted (the key was set to NULL),
from the idempotency key (`reserve:<uuid>`, `capture:<uuid>`, ...), which always named it. Its
own migration, so that on PostgreSQL the updates commit before 0006 alters the table.
"""

from django.db import migrations

JOB_KINDS = ("reserve", "capture", "release", "refund")
BATCH = 1000


def subject_for(entry) -> str:
    if entry.job_id is not None:
        return f"job:{entry.job_id}"
    _, _, job_id = entry.idempotency_key.partition(":")
    return f"job:{job_id}" if job_id else ""


def fill_subjects(apps, schema_editor):
    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    entries = LedgerEntry.objects.filter(kind__in=JOB_KINDS, subject="").only("pk", "job_id", "idempotency_key")
    batch = []
    for entry in entries.iterator(chunk_size=BATCH):
        entry.subject = subject_for(entry)
        batch.append(entry)
        if len(batch) == BATCH:
            LedgerEntry.objects.bulk_update(batch, ["subject"])
            batch = []
    if batch:
        LedgerEntry.objects.bulk_update(batch, ["subject"])


def fill_job_ids(apps, schema_editor):
    """Backwards: point entries at their job again where it still exists."""
    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    Job = apps.get_model("generation", "Job")
    for entry in LedgerEntry.objects.filter(subject__startswith="job:").only("pk", "subject").iterator():
        job_id = entry.subject.removeprefix("job:")
        if Job.objects.filter(pk=job_id).exists():
            LedgerEntry.objects.filter(pk=entry.pk).update(job_id=job_id)


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_ledgerentry_subject"), ("generation", "0001_initial")]

    operations = [migrations.RunPython(fill_subjects, fill_job_ids)]
