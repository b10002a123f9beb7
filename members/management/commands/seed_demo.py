"""Load demo data (idempotent): an operator, a member login, a partner, members with tags."""

import random
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from tqdm import tqdm

from core.actors import system_actor
from core.models import Partner, Scope
from core.schedules import schedules_sync
from core.services import partner_create, partner_key_issue, partner_keys_revoke
from members.activity import EventInput, events_ingest
from members.load_data import load_data_generate
from members.models import Member, TagCategory
from members.selectors import member_ids_by_external_id
from members.services import (
    TagInput,
    TagSyncItem,
    TagSyncMode,
    identities_replace,
    member_create,
    tags_sync,
)
from rewards.models import Reason, Reward
from rewards.services.catalog import reward_create
from rewards.services.certifications import certification_grant
from rewards.services.ledger import AwardSpec, points_award_batch
from tiers.services.reassessment import members_tier_reassess

OPERATOR_USERNAME = "operator"
OPERATOR_PASSWORD = "operator-demo-password"  # noqa: S105 - demo credentials, printed on purpose
MEMBER_USERNAME = "member"
MEMBER_PASSWORD = "member-demo-password"  # noqa: S105 - demo credentials, printed on purpose
PARTNER_NAME = "Demo Shop"

# A community with a past: joins over the last year, 90 days of activity (members/load_data.py).
HISTORY_PREFIX = "history-"
HISTORY_MEMBERS = 2000
HISTORY_DAYS = 90

_INTERESTS = ("skincare", "coffee", "outdoor", "gaming", "fashion", "fitness")


class Command(BaseCommand):
    help = (
        "Load demo data; safe to run again (existing rows are kept, a fresh partner key is issued)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--members", type=int, default=200)
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000", help="Where the server will listen (printed)."
        )
        parser.add_argument(
            "--history-members",
            type=int,
            default=HISTORY_MEMBERS,
            help="Synthetic members with 90 days of activity (external ids "
            f"{HISTORY_PREFIX}...), so the analytics have weeks to show; 0 for none.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        actor = system_actor("seed_demo")
        rng = random.Random(42)  # noqa: S311 - the same demo every time, not a secret

        schedules_sync()
        user_model = get_user_model()
        operator, created = user_model.objects.get_or_create(
            username=OPERATOR_USERNAME, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            operator.set_password(OPERATOR_PASSWORD)
            operator.save()

        with transaction.atomic():
            partner = Partner.objects.filter(name=PARTNER_NAME).first()
            if partner is None:
                partner, key = partner_create(name=PARTNER_NAME, scopes=Scope.values, at=now)
            else:
                # Keys are stored hashed, so the old one cannot be shown again: issue a new one.
                partner_keys_revoke(partner=partner)
                key = partner_key_issue(partner=partner, name="demo")

        wanted = [f"demo-{number:05d}" for number in range(1, options["members"] + 1)]
        existing = set(
            Member.objects.filter(external_id__in=wanted).values_list("external_id", flat=True)
        )
        for external_id in tqdm(wanted, desc="demo members", unit="member", file=self.stderr):
            if external_id in existing:
                continue
            with transaction.atomic():
                member = member_create(
                    external_id=external_id,
                    display_name=f"Demo Member {external_id[-5:]}",
                    email=f"{external_id}@example.com",
                    actor=actor,
                    at=now,
                )
                identities_replace(
                    member=member,
                    identities=[("wechat-openid", f"o-{external_id}")],
                    actor=actor,
                    at=now,
                )

        items = [
            TagSyncItem(
                external_id=external_id,
                tags=[
                    TagInput(
                        key="interest", value=rng.choice(_INTERESTS), category=TagCategory.SHOPPING
                    ),
                    TagInput(
                        key="newsletter",
                        value=rng.choice(("yes", "no")),
                        category=TagCategory.SOCIAL,
                    ),
                ],
            )
            for external_id in wanted
        ]
        tags_sync(
            namespace=partner.namespace, mode=TagSyncMode.MERGE, items=items, actor=actor, at=now
        )

        new_members = member_ids_by_external_id(
            external_ids=[external_id for external_id in wanted if external_id not in existing]
        )
        with transaction.atomic():
            points_award_batch(
                items=[
                    AwardSpec(
                        member_id=member_id,
                        points=rng.randint(20, 800),
                        reason=Reason.MANUAL,
                        note="Welcome points (demo)",
                    )
                    for member_id in new_members.values()
                ],
                actor=actor,
                at=now,
            )

        self._ladder_demo(new_members=new_members, rng=rng, actor=actor, now=now)
        self._history_demo(members=options["history_members"], actor=actor, now=now)

        member_user, created = user_model.objects.get_or_create(username=MEMBER_USERNAME)
        if created:
            member_user.set_password(MEMBER_PASSWORD)
            member_user.save()
            Member.objects.filter(external_id=wanted[0], user__isnull=True).update(user=member_user)

        tiers = dict(Member.objects.values_list("tier").annotate(n=Count("pk")).order_by())
        self.stdout.write(
            f"\nDemo data is ready. Members per tier: {tiers}\n"
            f"  Admin and operator login: {OPERATOR_USERNAME} / {OPERATOR_PASSWORD}\n"
            f"  Member login:             {MEMBER_USERNAME} / {MEMBER_PASSWORD} ({wanted[0] if wanted else '-'})\n"
            f"  Partner {PARTNER_NAME!r} API key (namespace {partner.namespace!r}, all scopes):\n"
            f"    {key}\n"
            f"  API docs: {options['url']}/api/docs/  Admin: {options['url']}/admin/\n"
        )

    def _history_demo(self, *, members: int, actor: Any, now: Any) -> None:
        """Synthetic members with months of activity, assessed under the ladder, so the
        dashboard's distribution, funnel, retention and health have something to show."""
        if members <= 0 or Member.objects.filter(external_id__startswith=HISTORY_PREFIX).exists():
            return
        with tqdm(total=members, desc="history members", unit="member", file=self.stderr) as bar:
            load_data_generate(
                members=members,
                days=HISTORY_DAYS,
                at=now,
                prefix=HISTORY_PREFIX,
                progress=bar.update,
            )
        member_ids = list(
            Member.objects.filter(external_id__startswith=HISTORY_PREFIX).values_list(
                "pk", flat=True
            )
        )
        with transaction.atomic():
            members_tier_reassess(member_ids=member_ids, actor=actor, at=now)

    def _ladder_demo(
        self, *, new_members: dict[str, Any], rng: random.Random, actor: Any, now: Any
    ) -> None:
        """Give the ladder something to show: certifications, a week of engagement for some
        members (through event ingestion, so rollups and points are real), a small catalog,
        then a reassessment so tiers follow the rules."""
        ids = sorted(new_members.items())
        engaged = [(external_id, pk) for external_id, pk in ids if rng.random() < 0.4]
        # The demo member (the first) is always engaged, so a member login shows progress.
        if ids and ids[0] not in engaged:
            engaged.insert(0, ids[0])
        members = Member.objects.in_bulk([pk for _, pk in engaged])
        # A demo of at most a few hundred members: each grant through the real service.
        for _, pk in engaged:
            certification_grant(member=members[pk], code="onboarding", actor=actor, at=now)
            if rng.random() < 0.25:
                certification_grant(member=members[pk], code="content-creator", actor=actor, at=now)
        events = [
            EventInput(
                event_id=f"demo-{external_id}-{day}-{n}",
                type=rng.choice(("comment", "like", "post" if n == 0 else "like")),
                occurred_at=now - timedelta(days=day, minutes=n),
                external_id=external_id,
            )
            for external_id, _ in engaged
            for day in range(rng.randint(2, 6))
            for n in range(rng.randint(2, 4))
        ]
        for start in range(0, len(events), 1000):
            events_ingest(items=events[start : start + 1000], actor=actor, at=now)
        if not Reward.objects.exists():
            for name, cost, extra in (
                ("Brand tote bag", 200, {"stock": 50}),
                ("New-product trial kit", 300, {"required_benefit": "new_product_trial"}),
                ("Community meetup seat", 500, {"stock": 20, "min_tier": "active"}),
            ):
                reward_create(actor=actor, at=now, name=name, points_cost=cost, **extra)
        members_tier_reassess(member_ids=[pk for _, pk in ids], actor=actor, at=now)
