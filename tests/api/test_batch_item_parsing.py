"""The lean parsers of award bodies and batch items (award batches, partners' events) give
exactly what their serializers give, and hand every body or item they do not take as it is (to
coerce, or to reject) back to the serializer, so results and 400 errors stay the serializers'
own."""

from typing import Any

import pytest
from rest_framework.exceptions import ValidationError

from members.api.serializers import EventItemSerializer, event_item_parse
from rewards.api.serializers import (
    AwardBatchSerializer,
    PointsAwardSerializer,
    award_batch_items_parse,
    award_parse,
)

AWARD_ITEMS: list[dict[str, Any]] = [
    {"external_id": "m-1", "points": 5},
    {"external_id": "m-1", "points": 5, "idempotency_key": "k-1", "note": "", "reason": "partner"},
    {"external_id": "m-1", "points": 5, "note": "welcome", "expires_at": None},
    {"external_id": "m-1", "points": 5, "pending_until": None, "reason": "manual"},
    {"external_id": "ü-member", "points": 10_000_000},
    # For the serializer: values to coerce, or errors to report.
    {"external_id": "m-1", "points": "5"},
    {"external_id": "m-1", "points": 5.0},
    {"external_id": "m-1", "points": True},
    {"external_id": "m-1", "points": 0},
    {"external_id": "m-1", "points": 10_000_001},
    {"external_id": " m-1 ", "points": 5},
    {"external_id": "", "points": 5},
    {"external_id": 7, "points": 5},
    {"external_id": "m\x00", "points": 5},
    {"external_id": "x" * 129, "points": 5},
    {"external_id": "m-1", "points": 5, "idempotency_key": ""},
    {"external_id": "m-1", "points": 5, "idempotency_key": None},
    {"external_id": "m-1", "points": 5, "note": None},
    {"external_id": "m-1", "points": 5, "note": "two\nlines"},
    {"external_id": "m-1", "points": 5, "reason": "refund"},
    {"external_id": "m-1", "points": 5, "reason": None},
    {"external_id": "m-1", "points": 5, "expires_at": "2099-01-01T00:00:00Z"},
    {"external_id": "m-1", "points": 5, "colour": "red"},
    {"points": 5},
    "m-1",
]


def _serializer_items(data: Any) -> list[dict[str, Any]] | None:
    serializer = AwardBatchSerializer(data=data)
    return (
        [dict(item) for item in serializer.validated_data["items"]]
        if serializer.is_valid()
        else None
    )


@pytest.mark.parametrize("item", AWARD_ITEMS, ids=repr)
def test_an_award_item_is_parsed_as_the_serializer_would_or_left_to_it(item):
    data = {"items": [{"external_id": "first", "points": 1}, item]}

    parsed = award_batch_items_parse(data)

    # None: the view hands the whole batch to the serializer, which coerces or reports.
    assert parsed is None or parsed == _serializer_items(data)


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"items": []},
        {"items": [{"external_id": "m", "points": 1}] * 1001},
        {"items": {"external_id": "m", "points": 1}},
        {"items": [{"external_id": "m", "points": 1}], "extra": 1},
    ],
    ids=["list", "empty", "too many", "not a list", "unknown field"],
)
def test_an_award_batch_the_serializer_refuses_is_left_to_it(data):
    assert award_batch_items_parse(data) is None
    assert _serializer_items(data) is None


def test_award_batches_the_parser_takes_are_all_the_plain_ones():
    plain = AWARD_ITEMS[:5]

    assert award_batch_items_parse({"items": plain}) == _serializer_items({"items": plain})
    assert all(award_batch_items_parse({"items": [item]}) is None for item in AWARD_ITEMS[5:])


AWARDS: list[Any] = [
    {"points": 5},
    {"points": 5, "reason": "purchase", "note": "order paid", "reference": "order:1/2@shop-a.b"},
    {"points": 5, "note": "", "expires_at": None, "pending_until": None},
    {"points": 10_000_000, "reference": "ü_order"},
    # For the serializer: values to coerce, or errors to report.
    {"points": "5"},
    {"points": 5.0},
    {"points": True},
    {"points": 0},
    {"points": 10_000_001},
    {"points": 5, "reference": ""},
    {"points": 5, "reference": "has space"},
    {"points": 5, "reference": "order#1"},
    {"points": 5, "reference": "o\n"},
    {"points": 5, "reference": " order-1"},
    {"points": 5, "reference": "x" * 201},
    {"points": 5, "reference": None},
    {"points": 5, "reference": 12},
    {"points": 5, "note": "two\nlines"},
    {"points": 5, "reason": "refund"},
    {"points": 5, "expires_at": "2099-01-01T00:00:00Z"},
    {"points": 5, "pending_until": "2099-01-01T00:00:00Z"},
    {"points": 5, "colour": "red"},
    {"note": "no points"},
    [{"points": 5}],
    "5",
]


def _serializer_award(data: Any) -> dict[str, Any] | None:
    serializer = PointsAwardSerializer(data=data)
    return dict(serializer.validated_data) if serializer.is_valid() else None


@pytest.mark.parametrize("data", AWARDS, ids=repr)
def test_an_award_body_is_parsed_as_the_serializer_would_or_left_to_it(data):
    parsed = award_parse(data)

    assert parsed is None or parsed == _serializer_award(data)


def test_the_award_parser_takes_the_plain_bodies_and_only_them():
    assert all(award_parse(data) is not None for data in AWARDS[:4])
    assert all(award_parse(data) is None for data in AWARDS[4:])


EVENT = {
    "id": "order-1:line#2",
    "external_id": "m-1",
    "type": "purchase",
    "occurred_at": "2026-05-01T10:00:00+08:00",
    "properties": {"amount": "12.50", "currency": "CNY", "nested": {"a": [1, None]}},
}

EVENTS: list[Any] = [
    EVENT,
    {k: v for k, v in EVENT.items() if k != "properties"},
    EVENT | {"occurred_at": "2026-05-01T02:00:00Z"},
    EVENT | {"occurred_at": "2026-05-01T02:00:00.123456+00:00"},
    EVENT | {"properties": {}},
    # For the serializer: values to coerce, or errors to report.
    EVENT | {"occurred_at": "2026-05-01T10:00:00"},
    EVENT | {"occurred_at": "yesterday"},
    EVENT | {"occurred_at": 1714528800},
    EVENT | {"id": "has space"},
    EVENT | {"id": ""},
    EVENT | {"id": 12},
    EVENT | {"id": "x" * 129},
    EVENT | {"external_id": " m-1"},
    EVENT | {"type": "Not a slug!"},
    EVENT | {"type": "x" * 65},
    EVENT | {"properties": None},
    EVENT | {"properties": [1]},
    EVENT | {"properties": {str(n): n for n in range(100)}},
    EVENT | {"colour": "red"},
    {k: v for k, v in EVENT.items() if k != "type"},
    ["not", "an", "object"],
]


def _serializer_event(raw: Any) -> dict[str, Any] | None:
    try:
        return dict(EventItemSerializer().run_validation(raw))
    except ValidationError:
        return None


@pytest.mark.parametrize("raw", EVENTS, ids=repr)
def test_an_event_is_parsed_as_the_serializer_would_or_left_to_it(raw):
    parsed = event_item_parse(raw)

    if parsed is not None:
        expected = _serializer_event(raw)
        assert parsed == expected
        assert [type(value) for value in parsed.values()] == [
            type(value) for value in expected.values()
        ]
        assert parsed["occurred_at"].tzinfo == expected["occurred_at"].tzinfo


def test_the_event_parser_takes_the_plain_events_and_only_them():
    assert all(event_item_parse(raw) is not None for raw in EVENTS[:5])
    assert all(event_item_parse(raw) is None for raw in EVENTS[5:])


def test_a_batch_parses_each_distinct_time_once_with_the_same_results():
    times: dict[str, Any] = {}
    batch = EVENTS[:5] * 2

    assert [event_item_parse(raw, times) for raw in batch] == [
        event_item_parse(raw) for raw in batch
    ]
    assert len(times) == 3  # the distinct occurred_at strings
