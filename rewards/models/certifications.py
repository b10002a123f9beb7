"""Capability: certification definitions and members' grants."""

from django.db import models
from django.db.models import F, Q


class Certification(models.Model):
    """A knowledge or skill certification (the capability rung of the ladder). Tier rules
    require certifications by code."""

    code = models.SlugField(max_length=64, primary_key=True)
    name = models.CharField(max_length=100)
    level = models.PositiveSmallIntegerField(default=1)
    description = models.TextField(blank=True)
    validity_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="A grant expires this long after it is given (empty: never).",
    )
    prerequisites = models.ManyToManyField(
        "self", symmetrical=False, blank=True, related_name="unlocks"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ("level", "code")

    def __str__(self) -> str:
        return self.name


class CertificationGrant(models.Model):
    """A member's certification: one row per member and certification. Re-certifying extends
    it; revoking keeps the row (with who and why) so the history stays explainable."""

    member = models.ForeignKey(
        "members.Member", on_delete=models.CASCADE, related_name="certification_grants"
    )
    certification = models.ForeignKey(
        Certification, on_delete=models.PROTECT, related_name="grants"
    )
    granted_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    evidence = models.CharField(max_length=1000, blank=True)
    granted_by = models.CharField(max_length=200)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.CharField(max_length=200, blank=True)
    revoke_reason = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("member", "certification"), name="certification_grant_unique"
            ),
            models.CheckConstraint(
                condition=Q(expires_at__isnull=True) | Q(expires_at__gt=F("granted_at")),
                name="certification_grant_expires_after_grant",
            ),
        )
        indexes = (models.Index(fields=("certification", "member"), name="cert_grant_cert_idx"),)
        permissions = (
            ("grant_certification", "Can grant certifications to members"),
            ("revoke_certification", "Can revoke members' certifications"),
        )

    def __str__(self) -> str:
        return f"{self.member_id}: {self.certification_id}"
