"""The OpenAPI document: valid, complete, and schemathesis finds no server error.

schemathesis generates requests from /openapi.json (bounded examples per
operation) against the app over ASGI, with a valid key and a small world of
accounts and services, so that generated calls reach the workflow rather
than stopping at the key check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from countersign.gateway.web.app import create_app
from countersign.store.db import Store
from tests.web_support import KEY, web_config

AUTH = {"Authorization": f"Bearer {KEY}"}
# No 5xx, and every answer as documented (status, content type, body schema).
# Not "positive data accepted": a well-formed request can still break a rule (400).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = int(
    os.environ.get("COUNTERSIGN_API_EXAMPLES", "30")
)  # per operation: bounded, so the suite stays quick
ENDPOINTS = {
    ("post", "/v1/service/{serviceName}/changeContact"),
    ("get", "/v1/contactChange"),
    ("get", "/v1/contactChange/{id}"),
    ("post", "/v1/contactChange/{id}/accept"),
    ("post", "/v1/contactChange/{id}/refuse"),
    ("post", "/v1/contactChange/{id}/resendEmail"),
    ("post", "/v1/contactChange/{id}/cancel"),
    ("get", "/v1/account/{email}/services"),
    ("post", "/v1/account"),
    ("get", "/v1/account/{email}"),
    ("put", "/v1/account/{email}"),
    ("post", "/v1/service"),
    ("get", "/v1/service/{serviceName}"),
    ("put", "/v1/service/{serviceName}"),
}


@pytest.fixture
def app(world: Store, tmp_path: Path) -> FastAPI:
    return create_app(world, web_config(tmp_path), health=lambda: True)


@pytest.fixture
def document(app: FastAPI) -> dict[str, Any]:
    with TestClient(app) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    served: dict[str, Any] = response.json()
    return served


def test_the_document_validates(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_endpoint_is_described_with_its_errors(document: dict[str, Any]) -> None:
    operations = {(method, path) for path, item in document["paths"].items() for method in item}
    assert operations == ENDPOINTS  # the page, /healthz and /metrics are not API
    error_ref = "#/components/schemas/ApiError"
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["security"] == [{"HTTPBearer": []}], (method, path)
            for status in ("401", "422"):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": error_ref}, (method, path, status)
    error = document["components"]["schemas"]["ApiError"]
    assert set(error["required"]) == {"class", "message", "code"}
    assert "HTTPValidationError" not in document["components"]["schemas"]


@pytest.fixture
def api_schema(app: FastAPI) -> Any:
    # A request already made, so that ids and codes reach more than "not found".
    with TestClient(app, headers=AUTH) as client:
        client.post(
            "/v1/service/split.com/changeContact",
            json={"askingAccount": "admin@example.com", "contactTech": "new@example.com"},
        )
    return schemathesis.openapi.from_asgi("/openapi.json", app)


# One test per operation; schemathesis' own pytest loader (from_fixture) does not
# run on pytest 9, so each test drives hypothesis with the operation's strategy.
@pytest.mark.parametrize(("method", "path"), sorted(ENDPOINTS), ids=lambda v: str(v))
def test_no_server_errors(api_schema: Any, method: str, path: str) -> None:
    operation = api_schema[path][method.upper()]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def call(case: Any) -> None:
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    call()
