"""Seed the built-in activity event types (SPEC §2): login, checkin, post, ..., course_completed."""

from django.db import migrations
from django.utils import timezone

from members.defaults import event_types_seed


def seed(apps, schema_editor):
    event_types_seed(apps.get_model("members", "EventType"), at=timezone.now())


class Migration(migrations.Migration):
    dependencies = [("members", "0002_activity")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
