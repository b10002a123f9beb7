"""Periodic schedules, declared in code and synced into django-celery-beat.

Sync creates missing schedules and never overwrites an existing one, so an operator's edits in
the admin (time, enabled) survive deploys.
"""

from dataclasses import dataclass

from django.db import transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask


@dataclass(frozen=True)
class Schedule:
    name: str
    task: str
    minute: str
    hour: str


SCHEDULES: tuple[Schedule, ...] = (
    Schedule("Purge old idempotency records", "core.idempotency_records_purge", "15", "*"),
    Schedule("Purge expired member tags", "members.tags_purge_expired", "5", "*"),
    Schedule("Expire points", "rewards.points_expire", "10", "16"),  # 00:10 Asia/Shanghai
    Schedule("Release pending points", "rewards.points_release_pending", "20", "*"),
    Schedule("Warn of expiring points", "rewards.points_expiring_notify", "0", "1"),  # 09:00 CST
    Schedule("Audit the points ledger", "rewards.ledger_audit", "40", "17"),
    Schedule("Dispatch webhooks", "core.webhooks_dispatch", "*", "*"),
    Schedule("Expire certifications", "rewards.certifications_expire", "15", "18"),  # 02:15 CST
    Schedule("Reassess tiers", "tiers.reassess_population", "30", "18"),  # 02:30 CST
    # After the reassessment, so titles of tiers reached overnight are awarded the same night.
    Schedule("Award automatic badges", "rewards.badges_award_catch_up", "15", "19"),  # 03:15 CST
    Schedule("Resume stalled tier reassessments", "tiers.reassessment_watchdog", "*/5", "*"),
    Schedule("Resume stalled bulk operations", "bulk.operation_watchdog", "*/5", "*"),
    # 04:00 CST, after the nightly jobs, so the last complete day is in the rollups.
    Schedule("Publish community health alerts", "analytics.health_alerts_publish", "0", "20"),
    # More often than the analytics cache expires: dashboards at scale never wait on a cold query.
    Schedule("Refresh analytics", "analytics.cache_refresh", "*/5", "*"),
)


@transaction.atomic
def schedules_sync() -> int:
    """Create the declared schedules that are missing. Returns how many were created."""
    created = 0
    for schedule in SCHEDULES:
        if PeriodicTask.objects.filter(name=schedule.name).exists():
            continue
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=schedule.minute,
            hour=schedule.hour,
            day_of_week="*",
            day_of_month="*",
            month_of_year="*",
            timezone="UTC",
        )
        PeriodicTask.objects.create(name=schedule.name, task=schedule.task, crontab=crontab)
        created += 1
    return created
