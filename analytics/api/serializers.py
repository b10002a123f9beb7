"""Analytics query inputs and outputs (read-only; the outputs render selector dataclasses)."""

from datetime import date, timedelta
from typing import Any

from django.conf import settings
from rest_framework import serializers

from core.api.serializers import StrictInputSerializer


class AnalyticsFunnelQuerySerializer(StrictInputSerializer):
    joined_from = serializers.DateField(
        required=False,
        help_text="First join date (program time zone), inclusive. Default: "
        "`joined_to` minus LOYALTY_ANALYTICS_FUNNEL_DEFAULT_DAYS - 1 (90 days in all).",
    )
    joined_to = serializers.DateField(
        required=False, help_text="Last join date (program time zone), inclusive. Default: today."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Fill the defaults from ``context["today"]`` and check the range."""
        today: date = self.context["today"]
        joined_to: date = attrs.get("joined_to") or today
        joined_from: date = attrs.get("joined_from") or joined_to - timedelta(
            days=settings.LOYALTY_ANALYTICS_FUNNEL_DEFAULT_DAYS - 1
        )
        if joined_to < joined_from:
            raise serializers.ValidationError(
                {"joined_to": ["Must not be before joined_from."]}, code="reversed_range"
            )
        maximum = settings.LOYALTY_ANALYTICS_FUNNEL_MAX_DAYS
        if (joined_to - joined_from).days + 1 > maximum:
            raise serializers.ValidationError(
                {"joined_from": [f"The range may span at most {maximum} days."]},
                code="range_too_long",
            )
        return {"joined_from": joined_from, "joined_to": joined_to}


def _weeks_field(default: int, help_text: str) -> serializers.IntegerField:
    return serializers.IntegerField(
        required=False,
        default=default,
        min_value=1,
        max_value=settings.LOYALTY_ANALYTICS_MAX_WEEKS,
        help_text=help_text,
    )


class AnalyticsRetentionQuerySerializer(StrictInputSerializer):
    weeks = _weeks_field(12, "Join-week cohorts, ending with the current week (1 to 52).")


class AnalyticsWeeksQuerySerializer(StrictInputSerializer):
    weeks = _weeks_field(12, "Weeks, ending with the current week (1 to 52).")


class AnalyticsTierShareSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    rank = serializers.IntegerField()
    count = serializers.IntegerField()
    share = serializers.FloatField(help_text="count / population (0 to 1).")
    expected_share = serializers.FloatField(help_text="What a healthy community expects.")
    gap = serializers.FloatField(help_text="share - expected_share.")


class AnalyticsTierDistributionSerializer(serializers.Serializer):
    total = serializers.IntegerField(help_text="Members not erased.")
    tiers = AnalyticsTierShareSerializer(many=True)
    as_of = serializers.DateTimeField()


class AnalyticsFunnelStepSerializer(serializers.Serializer):
    key = serializers.ChoiceField(
        choices=[
            "registered",
            "first_interaction",
            "regular_participation",
            "paid_conversion",
            "koc",
        ]
    )
    label = serializers.CharField()
    count = serializers.IntegerField()
    share_of_registered = serializers.FloatField()
    step_conversion = serializers.FloatField(
        allow_null=True, help_text="count / the previous step's count; null for the first step."
    )


class AnalyticsFunnelSerializer(serializers.Serializer):
    joined_from = serializers.DateField()
    joined_to = serializers.DateField()
    steps = AnalyticsFunnelStepSerializer(many=True)
    lost_within_72h = serializers.IntegerField(
        help_text="Members with no activity later than 72 hours after their first interaction."
    )
    lost_within_72h_share = serializers.FloatField(
        help_text="lost_within_72h / lost_within_72h_eligible."
    )
    lost_within_72h_eligible = serializers.IntegerField(
        help_text="Members whose first interaction is at least 72 hours old."
    )


class AnalyticsCohortSerializer(serializers.Serializer):
    week_start = serializers.DateField(help_text="The Monday of the join week.")
    size = serializers.IntegerField()
    retention = serializers.ListField(
        child=serializers.FloatField(),
        help_text="retention[k]: share of the cohort active in the k-th week after the join "
        "week (0 = the join week), for weeks begun so far.",
    )


class AnalyticsRetentionSerializer(serializers.Serializer):
    weeks = serializers.IntegerField()
    cohorts = AnalyticsCohortSerializer(many=True)


class AnalyticsHealthAlertSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=["post_density_drop", "shares_per_day_low", "members_silent_30d"]
    )
    message = serializers.CharField()
    value = serializers.FloatField()
    threshold = serializers.FloatField()


class AnalyticsHealthSerializer(serializers.Serializer):
    week_start = serializers.DateField(help_text="The Monday of the last complete week.")
    post_density = serializers.FloatField(help_text="Posts in the week per 100 members.")
    previous_post_density = serializers.FloatField()
    post_density_change = serializers.FloatField(
        allow_null=True, help_text="Week over week, e.g. -0.2 = down 20%; null without posts."
    )
    shares_per_day = serializers.FloatField(help_text="Over the last 7 complete days.")
    silent_count = serializers.IntegerField()
    dormant_count = serializers.IntegerField()
    silent_30d_count = serializers.IntegerField()
    population = serializers.IntegerField()
    alerts = AnalyticsHealthAlertSerializer(many=True)


class AnalyticsTierMovementSerializer(serializers.Serializer):
    week_start = serializers.DateField()
    promotions = serializers.IntegerField()
    demotions = serializers.IntegerField()


class AnalyticsPointsFlowSerializer(serializers.Serializer):
    week_start = serializers.DateField()
    issued = serializers.IntegerField()
    redeemed = serializers.IntegerField()
    expired = serializers.IntegerField()
