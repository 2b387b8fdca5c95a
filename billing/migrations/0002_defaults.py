"""Default prices (4 credits per 512x512 30-step image, 100 free credits) and one pack ($10 for 1,000)."""

from django.db import migrations


def create_defaults(apps, schema_editor):
    PriceSettings = apps.get_model("billing", "PriceSettings")
    CreditPack = apps.get_model("billing", "CreditPack")
    PriceSettings.objects.get_or_create(pk=1)
    if not CreditPack.objects.exists():
        CreditPack.objects.create(name="1,000 credits", credits=1000, price_cents=1000, currency="usd")


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(create_defaults, migrations.RunPython.noop)]
