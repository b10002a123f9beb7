"""Stateful fuzzing over the schema's OpenAPI links: create a member, award points, read the
balance and entries, reverse an award. Every step passes the same checks as the per-operation
fuzzing, and each balance read must equal what the scenario awarded and reversed so far."""

from collections import defaultdict
from typing import Any

import hypothesis
import pytest
from hypothesis import Phase

from tests.fuzz.conftest import FuzzWorld
from tests.fuzz.schema import SEED, load_schema
from tests.fuzz.test_schema_fuzz import CHECKS, fresh_idempotency_key

MEMBERS = "/api/v1/members/"
AWARDS = "/api/v1/members/{member_id}/points/awards/"
BALANCE = "/api/v1/members/{member_id}/points/"
REVERSAL = "/api/v1/points/entries/{entry_id}/reversal/"

schema = load_schema("operator").include(
    path_regex=r"^/api/v1/(members/(\{member_id\}/(points/.*)?)?|points/entries/.*)$"
)
BaseWorkflow: Any = schema.as_state_machine()


class LedgerWorkflow(BaseWorkflow):
    headers: dict[str, str] = {}  # set by the test
    seen: set[str] = set()  # operations that answered 2xx

    def setup(self) -> None:
        self.tally: dict[str, int] = defaultdict(int)
        self.entry_member: dict[str, str] = {}

    def before_call(self, case: Any) -> None:
        fresh_idempotency_key(case)

    def get_call_kwargs(self, case: Any) -> dict[str, Any]:
        return {"headers": self.headers}

    def validate_response(
        self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
    ) -> None:
        case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)
        if response.status_code < 300:
            self.seen.add(f"{case.method} {case.path}")
        self._follow(case, response)

    def _follow(self, case: Any, response: Any) -> None:
        """The model: awards and reversals move the balance, and nothing else does."""
        if response.status_code != 201 and case.path in (AWARDS, REVERSAL):
            return
        if case.path == AWARDS:
            member_id = str(case.path_parameters["member_id"])
            entry = response.json()
            self.tally[member_id] += entry["points"]
            self.entry_member[str(entry["id"])] = member_id
        elif case.path == REVERSAL:
            member_id = self.entry_member.get(str(case.path_parameters["entry_id"]))
            if member_id is not None:
                self.tally[member_id] += response.json()["points"]
        elif case.path == BALANCE and response.status_code == 200:
            member_id = str(case.path_parameters["member_id"])
            if member_id in self.tally:
                balance = response.json()
                held = balance["available"] + balance["pending"]
                assert held == self.tally[member_id], (balance, self.tally[member_id])


@pytest.mark.fuzz
def test_stateful_create_award_read_balance(fuzz: FuzzWorld) -> None:
    LedgerWorkflow.headers = fuzz.headers["operator"]
    LedgerWorkflow.seen = set()
    LedgerWorkflow.run(
        settings=hypothesis.settings(
            max_examples=12,
            stateful_step_count=6,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )
    # The chain was walked for real, not just refused: a member made, points awarded, read back.
    assert {f"POST {MEMBERS}", f"POST {AWARDS}", f"GET {BALANCE}"} <= LedgerWorkflow.seen, (
        LedgerWorkflow.seen,
        SEED,
    )
