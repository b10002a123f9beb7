"""The record of community health alerts, and the holder of the analytics permission."""

from django.db import models


class AlertCode(models.TextChoices):
    POST_DENSITY_DROP = "post_density_drop", "Weekly post density dropped"
    SHARES_PER_DAY_LOW = "shares_per_day_low", "Shares per day under the threshold"
    MEMBERS_SILENT_30D = "members_silent_30d", "Too many members silent for 30 days"


class CommunityAlert(models.Model):
    """One community health alert raised on one business day (at most one per code and day).

    The unique ``(code, business_date)`` also backs the ``community.alert`` outbox event: a re-run
    of the daily job on the same day records and emits nothing new.
    """

    code = models.CharField(max_length=32, choices=AlertCode.choices)
    business_date = models.DateField(help_text="The day (program time zone) it was raised.")
    value = models.FloatField(help_text="The measured value that crossed the threshold.")
    threshold = models.FloatField()
    message = models.CharField(max_length=500)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ("-business_date", "code")
        permissions = (("view_analytics", "Can view the analytics and the dashboard"),)
        constraints = (
            models.UniqueConstraint(
                fields=("code", "business_date"), name="community_alert_code_date_unique"
            ),
        )

    def __str__(self) -> str:
        return f"{self.code} {self.business_date}"
