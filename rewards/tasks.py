"""Periodic points jobs. Each is also a management command, so the demo runs without a broker."""

import logging

from django.utils import timezone

from loyalty.celery import app
from rewards.selectors import ledger_violations
from rewards.services.certifications import certifications_expire
from rewards.services.honors import badges_award_catch_up
from rewards.services.jobs import points_expire, points_expiring_notify, points_release_pending

logger = logging.getLogger(__name__)


@app.task(name="rewards.points_expire", queue="bulk")
def points_expire_task() -> int:
    return points_expire(at=timezone.now())


@app.task(name="rewards.points_release_pending", queue="bulk")
def points_release_pending_task() -> int:
    return points_release_pending(at=timezone.now())


@app.task(name="rewards.points_expiring_notify", queue="bulk")
def points_expiring_notify_task() -> int:
    return points_expiring_notify(at=timezone.now())


@app.task(name="rewards.ledger_audit", queue="bulk")
def ledger_audit_task() -> int:
    violations = ledger_violations()
    if violations:
        # An alert for the operators' log pipeline: none may ever appear.
        logger.error("Ledger audit found %d violations: %s", len(violations), violations[:20])
    return len(violations)


@app.task(name="rewards.certifications_expire", queue="bulk")
def certifications_expire_task() -> int:
    return certifications_expire(at=timezone.now())


@app.task(name="rewards.badges_award_catch_up", queue="bulk")
def badges_award_catch_up_task() -> int:
    return badges_award_catch_up(at=timezone.now())
