"""Each entry names its system counter account (double entry, invariant I5)."""

from django.db import migrations, models

# One set-based UPDATE. Rows start at the field's default, 'issuance', which is already right for
# every earn (most rows), so only the others are rewritten; a reversal takes the account of the
# entry it reverses (never itself a reversal).
BACKFILL = """
UPDATE rewards_pointsentry SET counter_account = CASE
    CASE WHEN kind = 'reverse'
        THEN (SELECT t.kind FROM rewards_pointsentry t WHERE t.id = rewards_pointsentry.reverses_id)
        ELSE kind END
    WHEN 'earn' THEN 'issuance'
    WHEN 'redeem' THEN 'redemption'
    WHEN 'expire' THEN 'expiry'
    WHEN 'adjust' THEN 'adjustment'
END
WHERE kind <> 'earn'
"""


class Migration(migrations.Migration):
    dependencies = [("rewards", "0004_seed_certifications")]

    operations = [
        migrations.AddField(
            model_name="pointsentry",
            name="counter_account",
            field=models.CharField(
                choices=[
                    ("issuance", "Issuance"),
                    ("redemption", "Redemption"),
                    ("expiry", "Expiry"),
                    ("adjustment", "Adjustment"),
                ],
                default="issuance",
                help_text="The system account on the other side: it moves by minus these points.",
                max_length=16,
            ),
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        migrations.AddConstraint(
            model_name="pointsentry",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("counter_account", "issuance"), ("kind", "earn")),
                    models.Q(("counter_account", "redemption"), ("kind", "redeem")),
                    models.Q(("counter_account", "expiry"), ("kind", "expire")),
                    models.Q(("counter_account", "adjustment"), ("kind", "adjust")),
                    models.Q(
                        ("counter_account__in", ["issuance", "redemption", "expiry", "adjustment"]),
                        ("kind", "reverse"),
                    ),
                    _connector="OR",
                ),
                name="points_entry_counter_account_of_kind",
            ),
        ),
    ]
