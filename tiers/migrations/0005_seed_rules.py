from django.db import migrations
from django.utils import timezone

from tiers.ladder import rules_seed


def seed(apps, schema_editor):
    rules_seed(
        apps.get_model("tiers", "RuleSet"),
        apps.get_model("tiers", "TierRule"),
        apps.get_model("tiers", "TierRequirement"),
        at=timezone.now(),
    )


class Migration(migrations.Migration):
    dependencies = [("tiers", "0004_rules_history_nominations")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
