"""The system accounts' balances, sharded, seeded so that the ledger sums to zero (I5)."""

from django.conf import settings
from django.db import migrations, models
from django.db.models import OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce

ACCOUNTS = ("issuance", "redemption", "expiry", "adjustment")


def seed(apps, schema_editor):
    balance_model = apps.get_model("rewards", "SystemAccountBalance")
    entry_model = apps.get_model("rewards", "PointsEntry")
    balance_model.objects.bulk_create(
        balance_model(account=account, shard=shard)
        for account in ACCOUNTS
        for shard in range(settings.LOYALTY_SYSTEM_ACCOUNT_SHARDS)
    )
    # The entries posted so far, in one UPDATE: each account's whole history on its shard 0 (only
    # an account's sum over its shards has a meaning).
    posted = (
        entry_model.objects.filter(counter_account=OuterRef("account"))
        .order_by()
        .values("counter_account")
        .annotate(total=Sum("points"))
        .values("total")
    )
    balance_model.objects.filter(shard=0).update(balance=-Coalesce(Subquery(posted), 0))


class Migration(migrations.Migration):
    dependencies = [("rewards", "0005_points_entry_counter_account")]

    operations = [
        migrations.CreateModel(
            name="SystemAccountBalance",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "account",
                    models.CharField(
                        choices=[
                            ("issuance", "Issuance"),
                            ("redemption", "Redemption"),
                            ("expiry", "Expiry"),
                            ("adjustment", "Adjustment"),
                        ],
                        max_length=16,
                    ),
                ),
                ("shard", models.PositiveSmallIntegerField()),
                ("balance", models.BigIntegerField(default=0)),
            ],
            options={
                "verbose_name": "system account balance",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("account", "shard"), name="system_account_balance_unique"
                    )
                ],
            },
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
