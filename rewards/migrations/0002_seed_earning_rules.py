"""Seed the default earning rules (SPEC §2): check-in 5, post 20, purchase 1 per currency unit."""

from django.db import migrations
from django.utils import timezone

from rewards.defaults import earning_rules_seed


def seed(apps, schema_editor):
    earning_rules_seed(apps.get_model("rewards", "EarningRule"), at=timezone.now())


class Migration(migrations.Migration):
    dependencies = [("rewards", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
