from django.db import migrations, models
from django.db.models import Q


class Migration(migrations.Migration):
    dependencies = [("billing", "0005_ledgerentry_subject_from_job")]

    operations = [
        migrations.RemoveField(model_name="ledgerentry", name="job"),
        migrations.AddConstraint(
            model_name="ledgerentry",
            constraint=models.UniqueConstraint(
                condition=Q(kind__in=["reserve", "capture", "release", "refund"]) & ~Q(subject=""),
                fields=("subject", "kind"),
                name="ledger_one_hold_entry_per_subject_and_kind",
            ),
        ),
    ]
