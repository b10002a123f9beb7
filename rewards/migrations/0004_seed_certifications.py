from django.db import migrations
from django.utils import timezone

from rewards.defaults import certifications_seed


def seed(apps, schema_editor):
    certifications_seed(apps.get_model("rewards", "Certification"), at=timezone.now())


class Migration(migrations.Migration):
    dependencies = [("rewards", "0003_certifications")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
