"""Fixtures shared by the OWASP tests: the stub resolver of the webhook tests and a member
holding one of everything a member-scoped path can name."""

from tests.core.conftest import fake_dns
from tests.security.test_object_level_access import victim

__all__ = ["fake_dns", "victim"]
