"""Seed the four community tiers (SPEC §2) so a fresh database already works."""

from decimal import Decimal

from django.db import migrations

LADDER = (
    ("basic", "Basic", 0, "Receives content passively.", Decimal("0.45")),
    ("active", "Active", 1, "Takes part in discussion and interaction.", Decimal("0.28")),
    ("koc", "KOC", 2, "Key opinion consumer: creates content.", Decimal("0.12")),
    ("kol", "KOL", 3, "Key opinion leader: represents the brand.", Decimal("0.05")),
)


def seed(apps, schema_editor):
    Tier = apps.get_model("tiers", "Tier")
    for code, name, rank, description, share in LADDER:
        Tier.objects.update_or_create(
            code=code,
            defaults={
                "name": name,
                "rank": rank,
                "description": description,
                "expected_share": share,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("tiers", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
