"""The OpenAPI schema the fuzz tests run over, loaded in-process from the Django app.

The schema is drf-spectacular's own output (the document ``/api/schema/`` serves), rendered to
JSON once per process; requests go straight to the WSGI application, no server needed.
"""

import json
import os
from functools import cache
from typing import Any

import schemathesis
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from schemathesis.specs.openapi.schemas import OpenApiSchema

from loyalty.wsgi import application

# CI bounds: a fixed seed and derandomized generation make every run draw the same cases. The
# coverage phase (deterministic boundary values, and for negative mode every way to break each
# field) is most of the cost, so it runs in full once, as the operator (who reaches nearly every
# handler), positive-only as a partner, and not as a member (the member API is small and mostly
# answers 403); the fuzzing phase runs for every role. LOYALTY_FUZZ_EXAMPLES raises the budget.
MAX_EXAMPLES = int(os.environ.get("LOYALTY_FUZZ_EXAMPLES", "8"))
SEED = 20261123
COVERAGE = {"operator": "all", "partner": "positive", "member": None}


# Verifiable credentials are posted as application/vc too: a JSON document under its own type.
schemathesis.serializer.alias("application/vc", "application/json")


@cache
def raw_schema() -> dict[str, Any]:
    document = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(document, renderer_context={}))


def fuzz_config(*, coverage: str | None) -> schemathesis.Config:
    # Stateful scenarios chain valid calls: negative data is the per-operation tests' job.
    phases: dict[str, Any] = {"stateful": {"generation": {"mode": "positive"}}}
    if coverage is None:
        phases["coverage"] = {"enabled": False}
    else:
        phases["coverage"] = {"enabled": True, "generation": {"mode": coverage}}
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["all"],
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
                # Credentials come from the role under test, never from generated headers.
                "with-security-parameters": False,
            },
            "phases": phases,
        }
    )


def load_schema(role: str) -> OpenApiSchema:
    schema = schemathesis.openapi.from_dict(
        json.loads(json.dumps(raw_schema())), config=fuzz_config(coverage=COVERAGE[role])
    )
    schema.app = application
    return schema
