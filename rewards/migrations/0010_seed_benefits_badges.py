from django.db import migrations
from django.utils import timezone

from rewards.defaults import badges_seed, benefits_seed


def seed(apps, schema_editor):
    at = timezone.now()
    benefits_seed(apps.get_model("rewards", "Benefit"), at=at)
    badges_seed(apps.get_model("rewards", "Badge"), at=at)


class Migration(migrations.Migration):
    dependencies = [("rewards", "0009_benefits_honors"), ("tiers", "0007_requirement_order")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
