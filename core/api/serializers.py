"""Serializer bases shared by every app's API."""

from typing import Any

from rest_framework import serializers


class StrictInputSerializer(serializers.Serializer):
    """An input body: unknown fields are an error (400), not silently dropped."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: ["Unknown field."] for name in unknown}, code="unknown_field"
                )
        return super().to_internal_value(data)

    def create(self, validated_data: Any) -> Any:  # pragma: no cover - serializers never write
        raise NotImplementedError("Input serializers never write; call a service.")

    def update(self, instance: Any, validated_data: Any) -> Any:  # pragma: no cover
        raise NotImplementedError("Input serializers never write; call a service.")


class ProblemErrorSerializer(serializers.Serializer):
    attr = serializers.CharField(allow_null=True)
    pointer = serializers.CharField()
    code = serializers.CharField()
    detail = serializers.CharField()


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details, as every error response carries them."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField()
    instance = serializers.CharField(required=False)
    errors = ProblemErrorSerializer(many=True, required=False)
