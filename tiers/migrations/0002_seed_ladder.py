"""Seed the four community tiers (SPEC §2) so a fresh database already works."""

from django.db import migrations

from tiers.ladder import ladder_seed


def seed(apps, schema_editor):
    ladder_seed(apps.get_model("tiers", "Tier"), with_multipliers=False)


class Migration(migrations.Migration):
    dependencies = [("tiers", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
