"""0004-0006: the ledger's job foreign key becomes an opaque `subject` (`job:<uuid>`), on SQLite
and PostgreSQL, for entries whose job exists and for those whose job was deleted (key only)."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.billing.support import give

# Job rows are made at generation 0003, before it gained the team fields.
BEFORE = [("billing", "0003_entry_kind_labels"), ("generation", "0003_job_prompt_search_index")]
AFTER = [("billing", "0006_remove_ledgerentry_job")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.database
@pytest.mark.django_db(transaction=True)
def test_job_ids_become_subjects(user):
    give(user, 20)  # a grant-like entry (adjust) that has no subject
    apps = migrate(BEFORE)
    try:
        Wallet = apps.get_model("billing", "Wallet")
        LedgerEntry = apps.get_model("billing", "LedgerEntry")
        Job = apps.get_model("generation", "Job")
        wallet = Wallet.objects.get(owner_user_id=user.pk)
        job = Job.objects.create(
            user_id=user.pk, prompt="p", width=64, height=64, steps=4, guidance_scale=7, sampler="euler", seed=1,
            num_images=1, model_name="m",
        )
        deleted_job_id = uuid.uuid4()

        def entry(kind, key, available, held, job_id=None):
            return LedgerEntry.objects.create(
                wallet=wallet, kind=kind, amount=4, available_delta=available, held_delta=held,
                available_after=16, held_after=4, idempotency_key=key, job_id=job_id,
            )

        entry("reserve", f"reserve:{job.pk}", -4, 4, job_id=job.pk)
        entry("capture", f"capture:{job.pk}", 0, -4, job_id=job.pk)
        entry("reserve", f"reserve:{deleted_job_id}", -4, 4)  # its job was deleted: SET_NULL
    finally:
        apps = migrate(AFTER)
    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    subjects = dict(LedgerEntry.objects.values_list("idempotency_key", "subject"))
    assert subjects[f"reserve:{job.pk}"] == subjects[f"capture:{job.pk}"] == f"job:{job.pk}"
    assert subjects[f"reserve:{deleted_job_id}"] == f"job:{deleted_job_id}"
    assert [s for k, s in subjects.items() if k.startswith("adjust:")] == [""]
    assert "job" not in {f.name for f in LedgerEntry._meta.get_fields()}
    executor = MigrationExecutor(connection)
    migrate(executor.loader.graph.leaf_nodes())  # the schema the rest of the suite expects
