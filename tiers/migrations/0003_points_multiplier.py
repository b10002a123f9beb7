from decimal import Decimal

from django.db import migrations, models

from tiers.ladder import DEFAULT_MULTIPLIERS


def seed(apps, schema_editor):
    Tier = apps.get_model("tiers", "Tier")
    for code, multiplier in DEFAULT_MULTIPLIERS.items():
        Tier.objects.filter(code=code).update(points_multiplier=multiplier)


class Migration(migrations.Migration):
    dependencies = [("tiers", "0002_seed_ladder")]

    operations = [
        migrations.AddField(
            model_name="tier",
            name="points_multiplier",
            field=models.DecimalField(
                decimal_places=2,
                default=Decimal("1"),
                help_text="Earning rules multiply points by this (floored to whole points).",
                max_digits=5,
            ),
        ),
        migrations.AddConstraint(
            model_name="tier",
            constraint=models.CheckConstraint(
                condition=models.Q(points_multiplier__gte=1), name="tier_points_multiplier_gte_1"
            ),
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
