"""The web and the log while the store cannot be reached (a PostgreSQL nobody listens for).

The whole daemon through a real outage is tests/faults/test_database_outage.py;
here, each face's answer: the page an HTML 503 in its language, the API its
JSON error shape, /healthz 503, and the outage logged once, however many
requests meet it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from countersign.config import ApiConfig, Config
from countersign.gateway.web.app import create_app
from countersign.store.db import Store
from countersign.store.health import Health, is_outage
from tests.cli_helpers import free_port

AUTH = {"Authorization": "Bearer outage-key"}


@pytest.fixture
def nowhere() -> Iterator[Store]:
    """A PostgreSQL URL on a port where nothing listens: every connection is refused."""
    store = Store(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    yield store
    store.dispose()


def test_the_page_api_and_health_answer_503_and_the_outage_is_logged_once(
    nowhere: Store, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config(api=ApiConfig(keys={"ops": "outage-key"}))
    app = create_app(nowhere, config, health=lambda: True)
    with TestClient(app, raise_server_exceptions=False) as client:
        pages = [client.get("/confirm/12?token=x", headers={"Accept-Language": "fr"})]
        pages.append(client.post("/confirm/12", data={"token": "x", "decision": "accept"}))
        api = [client.get("/v1/contactChange/12", headers=AUTH) for _ in range(3)]
        health = client.get("/healthz")
    for page in pages:
        assert page.status_code == 503
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["retry-after"] == "30"
    assert "Service momentanément indisponible" in pages[0].text and "#12" in pages[0].text
    for answer in api:
        assert answer.status_code == 503
        assert answer.json() == {
            "class": "Server::ServiceUnavailable",
            "message": "the store is unavailable; try again",
            "code": "unavailable",
        }
    assert health.status_code == 503 and health.json()["store"] is False
    lost = [r for r in caplog.records if r.name == "countersign.store"]
    assert [r.getMessage().split(":")[0] for r in lost] == ["store lost"]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_health_says_back_once_with_how_long(
    nowhere: Store, caplog: pytest.LogCaptureFixture
) -> None:
    health = Health()
    with pytest.raises(Exception) as refused, nowhere.read() as session:
        session.execute(text("SELECT 1"))
    assert is_outage(refused.value)
    assert health.failed(refused.value) and health.failed(refused.value)
    assert not health.available
    health.answered()
    health.answered()
    messages = [r.getMessage() for r in caplog.records if r.name == "countersign.store"]
    assert len(messages) == 2 and messages[0].startswith("store lost: OperationalError")
    assert messages[1].startswith("store back after ") and health.available
    assert not is_outage(ValueError("a bug, not an outage"))
