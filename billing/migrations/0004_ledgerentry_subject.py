from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_entry_kind_labels")]

    operations = [
        migrations.AddField(
            model_name="ledgerentry",
            name="subject",
            field=models.CharField(
                blank=True, db_index=True, default="", max_length=200,
                help_text="What a hold is for, as its spender names it (e.g. job:<uuid>); billing knows no spender.",
            ),
            preserve_default=False,
        ),
    ]
