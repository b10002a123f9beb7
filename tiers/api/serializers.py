from rest_framework import serializers

from tiers.models import Tier


class TierSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tier
        fields = ("code", "name", "rank", "description", "expected_share")
        read_only_fields = fields
