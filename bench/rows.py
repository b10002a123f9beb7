"""One row of the combined benchmark table (``bench/run.py``), shared by every suite."""

from dataclasses import dataclass

PASS = "PASS"  # noqa: S105 - a verdict, not a password
FAIL = "FAIL"
INFO = "info"
NOT_AVAILABLE = "not available"
ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class Row:
    """A figure measured against its reference, with the target it must meet.

    ``status`` is PASS or FAIL for a row with a target, ``info`` for context figures,
    ``not available`` for a suite whose endpoints do not exist yet and ERROR for a crash.
    """

    benchmark: str
    figure: str
    reference: str = "-"
    ratio: str = "-"
    target: str = "-"
    status: str = INFO
    note: str = ""


def verdict(passed: bool) -> str:
    return PASS if passed else FAIL


def ms(value: float) -> str:
    return f"{value:.1f} ms"


def per_s(value: float) -> str:
    return f"{value:,.0f}/s"
