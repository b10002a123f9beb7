"""Input and output bodies of the members, identities, tags and auth endpoints."""

from datetime import datetime

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from core.api.serializers import StrictInputSerializer
from members.models import Identity, Member, MemberTag, TagCategory
from members.services import TagSyncMode

# --- Output ---------------------------------------------------------------------------------------


class IdentitySerializer(serializers.ModelSerializer):
    class Meta:
        model = Identity
        fields = ("provider", "value", "created_at")


class MemberSerializer(serializers.ModelSerializer):
    tier = serializers.CharField(source="tier_id", read_only=True, help_text="Current tier code.")
    identities = IdentitySerializer(many=True, read_only=True)

    class Meta:
        model = Member
        fields = (
            "id",
            "external_id",
            "display_name",
            "email",
            "phone",
            "tier",
            "tier_since",
            "lifecycle_stage",
            "lifecycle_changed_at",
            "joined_at",
            "first_interaction_at",
            "first_purchase_at",
            "last_activity_at",
            "public_recognition",
            "identities",
            "erased_at",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields


class MemberTagSerializer(serializers.ModelSerializer):
    class Meta:
        model = MemberTag
        fields = (
            "namespace",
            "key",
            "value",
            "category",
            "expires_at",
            "source",
            "written_by",
            "synced_at",
        )
        read_only_fields = fields


class TagSyncResultSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["updated", "unchanged", "not_found", "rejected"])
    member_id = serializers.UUIDField(allow_null=True)
    errors = serializers.ListField(child=serializers.DictField(), default=list)


class TagSyncResponseSerializer(serializers.Serializer):
    results = TagSyncResultSerializer(many=True)


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


# --- Input ----------------------------------------------------------------------------------------


class MemberCreateSerializer(StrictInputSerializer):
    external_id = serializers.RegexField(r"^[\w.:@+-]+$", max_length=128)
    display_name = serializers.CharField(max_length=150)
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    phone = serializers.RegexField(
        r"^\+?[0-9 ()-]{3,32}$", max_length=32, required=False, allow_blank=True, default=""
    )


class MemberUpdateSerializer(StrictInputSerializer):
    display_name = serializers.CharField(max_length=150, required=False)
    email = serializers.EmailField(required=False, allow_blank=True)
    phone = serializers.RegexField(
        r"^\+?[0-9 ()-]{3,32}$", max_length=32, required=False, allow_blank=True
    )
    public_recognition = serializers.BooleanField(required=False)


class MeUpdateSerializer(StrictInputSerializer):
    """What a member may change about themselves: never tier, points or lifecycle."""

    display_name = serializers.CharField(max_length=150, required=False)
    public_recognition = serializers.BooleanField(required=False)


class IdentityInputSerializer(StrictInputSerializer):
    provider = serializers.SlugField(max_length=64)
    value = serializers.CharField(max_length=255)


class IdentitiesReplaceSerializer(StrictInputSerializer):
    identities = IdentityInputSerializer(many=True, max_length=50)


class TagInputSerializer(StrictInputSerializer):
    key = serializers.RegexField(r"^[\w.:-]+$", max_length=128)
    value = serializers.CharField(max_length=256, required=False, allow_blank=True, default="")
    category = serializers.ChoiceField(choices=TagCategory.choices, default=TagCategory.CUSTOM)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    def validate_expires_at(self, value: datetime | None) -> datetime | None:
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("Must be in the future.")
        return value


def _tag_list_field() -> serializers.ListField:
    return serializers.ListField(
        child=TagInputSerializer(), max_length=settings.LOYALTY_MAX_TAGS_PER_NAMESPACE
    )


def _unique_keys(tags: list[dict]) -> list[dict]:
    keys = [tag["key"] for tag in tags]
    if len(keys) != len(set(keys)):
        raise serializers.ValidationError("A tag key is listed twice.", code="duplicate_key")
    return tags


class NamespaceTagsReplaceSerializer(StrictInputSerializer):
    tags = _tag_list_field()

    def validate_tags(self, tags: list[dict]) -> list[dict]:
        return _unique_keys(tags)


class TagSyncItemSerializer(StrictInputSerializer):
    external_id = serializers.CharField(max_length=128)
    tags = _tag_list_field()

    def validate_tags(self, tags: list[dict]) -> list[dict]:
        return _unique_keys(tags)


class TagSyncSerializer(StrictInputSerializer):
    """The envelope is validated whole; each member item on its own, for per-item results."""

    namespace = serializers.SlugField(max_length=64)
    mode = serializers.ChoiceField(choices=[mode.value for mode in TagSyncMode])
    members = serializers.ListField(
        child=serializers.JSONField(),
        min_length=1,
        max_length=settings.LOYALTY_MAX_BATCH_ITEMS,
        help_text="Each item: external_id and tags (as in PUT members/{id}/tags/{namespace}/).",
    )


class TokenObtainInputSerializer(StrictInputSerializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, trim_whitespace=False)


class TokenRefreshInputSerializer(StrictInputSerializer):
    refresh = serializers.CharField(max_length=2000)


class MemberTokenInputSerializer(StrictInputSerializer):
    external_id = serializers.CharField(max_length=128)


class TagSyncDocumentedSerializer(TagSyncSerializer):
    """The same body as TagSyncSerializer, with the item shape spelled out for the schema."""

    members = TagSyncItemSerializer(many=True, max_length=1000)  # type: ignore[assignment]
