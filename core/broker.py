"""Publishing background work after commit without failing what has already committed."""

import logging
from collections.abc import Callable

from django.db import transaction
from kombu.exceptions import OperationalError as BrokerUnavailableError

logger = logging.getLogger(__name__)


def enqueue_on_commit(send: Callable[[], object], *, what: str) -> None:
    """Call ``send`` (which publishes tasks) once the transaction commits.

    With the broker down the committed change stands and the request still succeeds: the
    failure is logged, and the job that owns the work (the nightly run, a watchdog, the next
    dispatch) picks it up later. Any other error propagates as usual.
    """

    def guarded() -> None:
        try:
            send()
        except BrokerUnavailableError:
            logger.warning("Broker unavailable: %s not enqueued now.", what, exc_info=True)

    transaction.on_commit(guarded)
