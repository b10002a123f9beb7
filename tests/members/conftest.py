import pytest


@pytest.fixture(autouse=True)
def _event_types_after_flush(request: pytest.FixtureRequest) -> None:
    """Transactional tests flush the data migrations' rows: seed the built-in event types again."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        return
    request.getfixturevalue("transactional_db")
    from django.utils import timezone

    from members.defaults import event_types_seed
    from members.models import EventType

    event_types_seed(EventType, at=timezone.now())
