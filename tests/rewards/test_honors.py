"""Badges and titles: idempotent awards, automatic awards by rule (set-based, from the hooks and
the daily catch-up), and the public honors wall."""

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from core.actors import system_actor
from core.exceptions import InvalidInputError
from core.models import OutboxEvent
from members.models import Member
from members.services import member_erase, member_update
from rewards.models import Badge, CheckIn, MemberBadge
from rewards.selectors import honors_wall, member_badges_list, member_title
from rewards.services.certifications import certification_grant
from rewards.services.earning import business_date_of, checkin_create
from rewards.services.honors import (
    BadgeRule,
    MemberErasedError,
    badge_award,
    badge_rule_parse,
    badges_award_automatic,
    badges_award_catch_up,
)
from tiers.services.reassessment import members_tier_reassess

ACTOR = system_actor("tests")


def _held(member: Member) -> set[str]:
    return set(MemberBadge.objects.filter(member=member).values_list("badge_id", flat=True))


def _awarded_events() -> list[tuple[str, str]]:
    return sorted(
        (event.aggregate_id, event.payload["badge"])
        for event in OutboxEvent.objects.filter(event_type="badge.awarded")
    )


# --- Rules (pure) ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "parsed"),
    [
        ("first_post", BadgeRule("first_post")),
        ("checkin_streak_7", BadgeRule("checkin_streak", days=7)),
        ("checkin_streak_30", BadgeRule("checkin_streak", days=30)),
        ("reached_tier:koc", BadgeRule("reached_tier", code="koc")),
        ("certification:content-creator", BadgeRule("certification", code="content-creator")),
    ],
)
def test_badge_rules_parse(rule, parsed) -> None:
    assert badge_rule_parse(rule) == parsed


@pytest.mark.parametrize(
    "rule",
    [
        "",
        "first_posts",
        "checkin_streak_",
        "checkin_streak_0",
        "checkin_streak_x",
        "reached_tier:",
        "reached_tier: koc",
        "certification",
        "tier:koc",
    ],
)
def test_unknown_badge_rules_are_refused(rule) -> None:
    with pytest.raises(ValueError, match="Unknown badge rule"):
        badge_rule_parse(rule)


# --- Manual awards --------------------------------------------------------------------------------


def test_awarding_a_badge_twice_awards_it_once(make_member) -> None:
    member = make_member()
    at = timezone.now()

    first = badge_award(member=member, code="community-hero", reason="Helped", actor=ACTOR, at=at)
    second = badge_award(
        member=member, code="community-hero", reason="Again", actor=ACTOR, at=at + timedelta(1)
    )

    assert (first.created, second.created) == (True, False)
    assert second.award.pk == first.award.pk
    assert (second.award.reason, second.award.awarded_at) == ("Helped", at)
    assert _held(member) == {"community-hero"}
    assert _awarded_events() == [(str(member.pk), "community-hero")]


def test_an_unknown_or_inactive_badge_is_refused_and_nothing_is_written(make_member) -> None:
    member = make_member()
    Badge.objects.filter(pk="community-hero").update(is_active=False)

    for code in ("no-such-badge", "community-hero"):
        with pytest.raises(InvalidInputError):
            badge_award(member=member, code=code, actor=ACTOR, at=timezone.now())

    assert _held(member) == set()
    assert _awarded_events() == []


def test_an_erased_member_is_not_awarded(make_member) -> None:
    member = make_member()
    member_erase(member=member, actor=ACTOR, at=timezone.now())

    with pytest.raises(MemberErasedError):
        badge_award(member=member, code="community-hero", actor=ACTOR, at=timezone.now())

    assert _held(member) == set()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_awards_of_one_badge_write_one_row_and_one_event(make_member) -> None:
    from rewards.defaults import badges_seed

    badges_seed(Badge, at=timezone.now())
    member = make_member()
    threads = 12
    barrier = threading.Barrier(threads)
    results: list[object] = [None] * threads

    def run(index: int) -> None:
        try:
            barrier.wait()
            with transaction.atomic(durable=True):
                results[index] = badge_award(
                    member=member, code="community-hero", actor=ACTOR, at=timezone.now()
                ).created
        except Exception as error:  # reported by the assertion below
            results[index] = error
        finally:
            connection.close()

    workers = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    close_old_connections()

    assert sorted(results, key=str) == [False] * (threads - 1) + [True]
    assert MemberBadge.objects.filter(member=member).count() == 1
    assert _awarded_events() == [(str(member.pk), "community-hero")]


# --- Automatic awards -----------------------------------------------------------------------------


def test_a_seven_day_check_in_streak_awards_the_streak_badge(make_member) -> None:
    member, other = make_member(), make_member()
    now = timezone.now()
    today = business_date_of(now)
    # Six days in a row before today for one member, five for the other.
    for who, days in ((member, 6), (other, 5)):
        CheckIn.objects.bulk_create(
            CheckIn(
                member=who,
                business_date=today - timedelta(days=day),
                streak=days + 1 - day,
                created_at=now - timedelta(days=day),
            )
            for day in range(1, days + 1)
        )

    checkin_create(member=member, actor=ACTOR, at=now)
    checkin_create(member=other, actor=ACTOR, at=now)

    assert CheckIn.objects.get(member=member, business_date=today).streak == 7
    assert _held(member) == {"streak-7"}
    assert _held(other) == set()
    assert _awarded_events() == [(str(member.pk), "streak-7")]


def test_a_thirty_day_streak_awards_both_streak_badges_once(make_member) -> None:
    member = make_member()
    now = timezone.now()
    today = business_date_of(now)
    CheckIn.objects.bulk_create(
        CheckIn(
            member=member,
            business_date=today - timedelta(days=day),
            streak=30 - day,
            created_at=now - timedelta(days=day),
        )
        for day in range(1, 30)
    )

    checkin_create(member=member, actor=ACTOR, at=now)
    checkin_create(member=member, actor=ACTOR, at=now)  # a repeat the same day: nothing new

    assert _held(member) == {"streak-7", "streak-30"}
    assert len(_awarded_events()) == 2


def test_the_catch_up_awards_first_posts_and_skips_erased_members(
    make_member, add_activity, capsys
) -> None:
    poster, reader, erased = make_member(), make_member(), make_member()
    add_activity(poster, posts=1)
    add_activity(reader, interactions=3)
    add_activity(erased, posts=2)
    member_erase(member=erased, actor=ACTOR, at=timezone.now())

    call_command("award_badges")
    again = badges_award_catch_up(at=timezone.now(), chunk_size=1)

    assert "1 badges awarded." in capsys.readouterr().out
    assert again == 0
    assert (_held(poster), _held(reader), _held(erased)) == ({"first-post"}, set(), set())


def test_reaching_a_tier_by_reassessment_awards_its_title(make_member, add_activity, certify):
    climber, idle = make_member(), make_member()
    for member in (climber, idle):
        certify(member, "onboarding")
    add_activity(climber, days=4, interactions=3)

    counts = members_tier_reassess(member_ids=[climber.pk, idle.pk], actor=ACTOR, at=timezone.now())

    assert counts.changed == 1
    assert Member.objects.get(pk=climber.pk).tier_id == "active"
    assert _held(climber) == {"title-active"}
    assert _held(idle) == set()


def test_a_certification_grant_awards_the_certified_badges(make_member) -> None:
    member = make_member()
    now = timezone.now()

    with transaction.atomic():
        certification_grant(member=member, code="onboarding", actor=ACTOR, at=now)
        certification_grant(member=member, code="content-creator", actor=ACTOR, at=now)
        certification_grant(member=member, code="content-creator", actor=ACTOR, at=now)

    assert _held(member) == {"onboarded", "certified-content-creator"}
    assert member_title(list(member_badges_list(member=member))) == "Certified content creator"
    assert len(_awarded_events()) == 2


def test_automatic_awards_are_set_based(
    make_member, add_activity, certify, django_assert_max_num_queries
) -> None:
    members = [make_member() for _ in range(30)]
    for member in members:
        add_activity(member, posts=1)
        certify(member, "onboarding")

    with transaction.atomic(), django_assert_max_num_queries(10):
        awarded = badges_award_automatic(member_ids=[m.pk for m in members], at=timezone.now())

    assert awarded == 60
    assert MemberBadge.objects.count() == 60
    assert OutboxEvent.objects.filter(event_type="badge.awarded").count() == 60


# --- The wall -------------------------------------------------------------------------------------


def test_the_wall_lists_only_opted_in_members_newest_first(make_member) -> None:
    shy = make_member(display_name="Shy")
    proud = make_member(display_name="Proud")
    gone = make_member(display_name="Gone")
    now = timezone.now()
    for member in (proud, gone):
        member_update(member=member, changes={"public_recognition": True}, actor=ACTOR, at=now)
    for offset, member in enumerate((shy, proud, gone)):
        badge_award(member=member, code="community-hero", actor=ACTOR, at=now - timedelta(offset))
    badge_award(member=proud, code="title-koc", actor=ACTOR, at=now)
    member_erase(member=gone, actor=ACTOR, at=now)

    wall = honors_wall(at=now, limit=10)

    assert [(entry.display_name, entry.badge) for entry in wall] == [
        ("Proud", "title-koc"),
        ("Proud", "community-hero"),
    ]
    assert wall[0].is_title is True
