"""OWASP API9 (improper inventory management): the OpenAPI schema and the URL resolver list
the same operations, both ways, so nothing is served undocumented and nothing documented is
missing; the schema names one version and every operation declares its errors."""

from drf_spectacular.generators import SchemaGenerator

from tests.security.routes import api_operations

METHODS = {"get", "post", "put", "patch", "delete"}


def _schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def test_the_schema_and_the_url_resolver_list_the_same_operations():
    schema = _schema()
    documented = {
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        if path.startswith("/api/v1/")
        for method in operations
        if method in METHODS
    }

    served = {operation.label for operation in api_operations()}

    assert served - documented == set(), "served but not in the schema"
    assert documented - served == set(), "in the schema but not served"
    assert len(served) >= 80


def test_one_api_version_is_served_and_documented():
    schema = _schema()

    versions = {path.split("/")[2] for path in schema["paths"] if path.startswith("/api/")}

    assert versions == {"v1"}
    assert schema["info"]["version"] == "1.0.0"


def test_every_operation_documents_its_problem_responses():
    schema = _schema()

    undocumented = [
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if method in METHODS
        and not any(code.startswith("4") for code in operation.get("responses", {}))
    ]

    assert undocumented == []
