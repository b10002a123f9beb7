"""Input and output bodies of the members, identities, tags and auth endpoints."""

import json
import re
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from core.api.serializers import StrictInputSerializer
from members.activity import EventStatus, RejectReason
from members.models import ActivityEvent, Identity, Member, MemberTag, TagCategory
from members.selectors import METRIC_NAMES, MemberMetrics
from members.services import TagSyncMode

# The member's own view renders the same shapes as the tier, points, certification and badge
# endpoints: reusing their serializers keeps one schema component per shape (one contract), at
# the cost of this API module importing the other apps' API serializers (no cycle: they do not
# import members.api).
from rewards.api.serializers import (
    BenefitSerializer,
    CertificationGrantSerializer,
    MemberBadgeSerializer,
    PointsBalanceSerializer,
)
from rewards.selectors import MemberOverview
from tiers.api.serializers import MemberTierSerializer

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
            "last_interaction_at",
            "first_purchase_at",
            "last_purchase_at",
            "last_activity_at",
            "last_login_at",
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


# --- Activity events ------------------------------------------------------------------------------

EVENT_ID_PATTERN = r"^[\w.:@#/+-]+$"
# Members' ids cannot contain ":", which separates the member's id from theirs when stored.
MEMBER_EVENT_ID_PATTERN = r"^[\w.-]+$"
MEMBER_EVENT_ID_MAX_LENGTH = 80


class AwareDateTimeField(serializers.DateTimeField):
    """A timestamp with an explicit UTC offset: a naive one could land in the wrong day."""

    def enforce_timezone(self, value: datetime) -> datetime:
        if timezone.is_naive(value):
            raise serializers.ValidationError(
                "Include a UTC offset, e.g. 2026-05-01T10:00:00+08:00.", code="naive_datetime"
            )
        return super().enforce_timezone(value)


def _properties_validate(value: dict[str, Any]) -> None:
    if len(value) > settings.LOYALTY_EVENT_MAX_PROPERTIES_KEYS:
        raise serializers.ValidationError(
            f"At most {settings.LOYALTY_EVENT_MAX_PROPERTIES_KEYS} keys.", code="too_many_keys"
        )
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > settings.LOYALTY_EVENT_MAX_PROPERTIES_BYTES:
        raise serializers.ValidationError(
            f"At most {settings.LOYALTY_EVENT_MAX_PROPERTIES_BYTES} bytes of JSON.",
            code="too_large",
        )
    if _json_depth(value) > settings.LOYALTY_EVENT_MAX_PROPERTIES_DEPTH:
        raise serializers.ValidationError(
            f"At most {settings.LOYALTY_EVENT_MAX_PROPERTIES_DEPTH} levels of nesting.",
            code="too_deep",
        )


def _json_depth(value: Any) -> int:
    """Levels of objects and lists in a parsed JSON value (a flat object is 1), iteratively."""
    depth, level = 0, [value]
    while level:
        containers = [item for item in level if isinstance(item, dict | list)]
        if not containers:
            return depth
        depth += 1
        level = [
            child
            for item in containers
            for child in (item.values() if isinstance(item, dict) else item)
        ]
    return depth


def _properties_field() -> serializers.DictField:
    return serializers.DictField(
        required=False,
        default=dict,
        validators=[_properties_validate],
        help_text=(
            "Free-form details. A purchase needs `amount` (decimal string or number, 0 to 10^9, "
            "at most 2 decimal places) and may give `currency` (ISO 4217)."
        ),
    )


class EventItemSerializer(StrictInputSerializer):
    id = serializers.RegexField(
        EVENT_ID_PATTERN,
        max_length=128,
        help_text="Your id of the event; with your source it makes the event idempotent.",
    )
    external_id = serializers.CharField(max_length=128, help_text="The member's external id.")
    type = serializers.SlugField(max_length=64, help_text="A registered event type.")
    occurred_at = AwareDateTimeField()
    properties = _properties_field()


_EVENT_ITEM_FIELDS = frozenset(EventItemSerializer._declared_fields)
_EVENT_ID = re.compile(EVENT_ID_PATTERN)
_EVENT_TYPE = re.compile(r"[-a-zA-Z0-9_]+")  # SlugField's own pattern
_OCCURRED_AT = AwareDateTimeField()


def _plain_text(value: Any, max_length: int) -> bool:
    """A non-blank string that ``CharField`` keeps as is: printable (so no NUL or surrogate),
    nothing to trim, not too long."""
    return (
        type(value) is str
        and 0 < len(value) <= max_length
        and value.isprintable()
        and value.strip() == value
    )


def event_item_parse(raw: Any, times: dict[str, datetime] | None = None) -> dict[str, Any] | None:
    """One event as ``EventItemSerializer().run_validation`` returns it, checked without DRF's
    per-field machinery (most of a 1,000-event batch's validation time), for an item whose
    values are already in their final form. ``None`` when the item needs the serializer: a value
    to coerce, or an error to report, which then comes from the serializer itself. ``times``
    memoises parsed ``occurred_at`` strings across one batch's items (they often repeat)."""
    if type(raw) is not dict or not raw.keys() <= _EVENT_ITEM_FIELDS:
        return None
    event_id, external_id, event_type = raw.get("id"), raw.get("external_id"), raw.get("type")
    properties = raw.get("properties", {})
    if not (
        _plain_text(event_id, 128)
        and _EVENT_ID.search(event_id)
        and _plain_text(external_id, 128)
        and _plain_text(event_type, 64)
        and _EVENT_TYPE.fullmatch(event_type)
        and type(raw.get("occurred_at")) is str
        and type(properties) is dict
    ):
        return None
    try:
        text = raw["occurred_at"]
        occurred_at = times.get(text) if times is not None else None
        if occurred_at is None:
            occurred_at = _OCCURRED_AT.to_internal_value(text)
            if times is not None:
                times[text] = occurred_at
        properties = dict(properties)  # DictField's copy
        _properties_validate(properties)
    except serializers.ValidationError:
        return None
    return {
        "id": event_id,
        "external_id": external_id,
        "type": event_type,
        "occurred_at": occurred_at,
        "properties": properties,
    }


class MeEventItemSerializer(StrictInputSerializer):
    id = serializers.RegexField(
        MEMBER_EVENT_ID_PATTERN,
        max_length=MEMBER_EVENT_ID_MAX_LENGTH,
        help_text="The client's id of the event (letters, digits, '_', '.', '-').",
    )
    type = serializers.SlugField(
        max_length=64, help_text="An event type members may post (e.g. post, comment, like)."
    )
    occurred_at = AwareDateTimeField()
    properties = _properties_field()


class EventBatchSerializer(StrictInputSerializer):
    """The envelope is validated whole; each event on its own, for per-item results."""

    events = serializers.ListField(
        child=serializers.JSONField(),
        min_length=1,
        max_length=settings.LOYALTY_MAX_BATCH_ITEMS,
        help_text="Each item: id, external_id, type, occurred_at, properties.",
    )


class EventBatchDocumentedSerializer(EventBatchSerializer):
    """The same body as EventBatchSerializer, with the item shape spelled out for the schema."""

    events = EventItemSerializer(many=True, max_length=settings.LOYALTY_MAX_BATCH_ITEMS)  # type: ignore[assignment]


class MeEventBatchSerializer(StrictInputSerializer):
    events = serializers.ListField(
        child=serializers.JSONField(),
        min_length=1,
        max_length=settings.LOYALTY_MEMBER_MAX_BATCH_ITEMS,
        help_text="Each item: id, type, occurred_at, properties.",
    )


class MeEventBatchDocumentedSerializer(MeEventBatchSerializer):
    """The same body as MeEventBatchSerializer, with the item shape spelled out for the schema."""

    events = MeEventItemSerializer(many=True, max_length=settings.LOYALTY_MEMBER_MAX_BATCH_ITEMS)  # type: ignore[assignment]


EVENT_STATUSES = tuple(status.value for status in EventStatus)
EVENT_REJECT_REASONS = tuple(reason.value for reason in RejectReason)


class EventResultSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The event's id as sent.")
    status = serializers.ChoiceField(choices=EVENT_STATUSES)
    reason = serializers.ChoiceField(
        choices=EVENT_REJECT_REASONS,
        allow_null=True,
        help_text="Why a rejected event was rejected.",
    )
    points_awarded = serializers.IntegerField(
        help_text="Points the event earned (for a duplicate: what it earned the first time)."
    )
    errors = serializers.ListField(child=serializers.DictField(), default=list)


class EventBatchResponseSerializer(serializers.Serializer):
    results = EventResultSerializer(many=True)


class ActivityEventSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="client_event_id", help_text="The sender's id of the event.")

    class Meta:
        model = ActivityEvent
        fields = (
            "id",
            "source",
            "type",
            "occurred_at",
            "business_date",
            "properties",
            "points_awarded",
            "received_at",
        )
        read_only_fields = fields


# --- Metrics -------------------------------------------------------------------------------------


class MemberMetricsQuerySerializer(StrictInputSerializer):
    window_days = serializers.IntegerField(min_value=1, max_value=366, default=30)
    as_of = serializers.DateField(
        required=False, help_text="The last day of the window (program time zone); default today."
    )


class MemberMetricsSerializer(serializers.Serializer):
    member_id = serializers.UUIDField()
    as_of = serializers.DateField()
    window_days = serializers.IntegerField()
    interactions = serializers.IntegerField()
    active_days = serializers.IntegerField()
    posts = serializers.IntegerField()
    shares = serializers.IntegerField()
    purchases = serializers.IntegerField()
    purchase_amount = serializers.DecimalField(max_digits=16, decimal_places=2)
    qualifying_points = serializers.IntegerField()
    checkin_streak = serializers.IntegerField()
    tenure_days = serializers.IntegerField()

    @staticmethod
    def body(
        *, member_id: Any, as_of: Any, window_days: int, metrics: MemberMetrics
    ) -> dict[str, Any]:
        return {
            "member_id": member_id,
            "as_of": as_of,
            "window_days": window_days,
            **{name: metrics.value(name) for name in METRIC_NAMES},
        }


# --- The member's own view ----------------------------------------------------------------------


class MeSerializer(MemberSerializer):
    """The signed-in member's profile with their tier and progress, balance, benefits, badges
    and certifications."""

    title = serializers.CharField(
        allow_null=True, read_only=True, help_text="The most prestigious title held, if any."
    )
    tier_progress = MemberTierSerializer(
        read_only=True, help_text="As GET me/tier/: the tier and progress to the next one."
    )
    balance = PointsBalanceSerializer(read_only=True, help_text="As GET me/points/.")
    benefits = BenefitSerializer(
        many=True, read_only=True, help_text="What the member's tier gives them."
    )
    badges = MemberBadgeSerializer(many=True, read_only=True, help_text="Newest first.")
    certifications = CertificationGrantSerializer(
        many=True, read_only=True, help_text="Held, expired or revoked, each with its status."
    )

    class Meta(MemberSerializer.Meta):
        fields = (
            *MemberSerializer.Meta.fields,
            "title",
            "tier_progress",
            "balance",
            "benefits",
            "badges",
            "certifications",
        )
        read_only_fields = fields

    def to_representation(self, instance: MemberOverview) -> dict[str, Any]:
        fields = self.fields
        return {
            **MemberSerializer(instance.member).data,
            "title": instance.title,
            "tier_progress": fields["tier_progress"].to_representation(
                MemberTierSerializer.body(instance.standing)
            ),
            "balance": fields["balance"].to_representation(instance.balance),
            "benefits": fields["benefits"].to_representation(instance.benefits),
            "badges": fields["badges"].to_representation(instance.badges),
            "certifications": fields["certifications"].to_representation(instance.certifications),
        }
