"""The HTTP API: every endpoint, every error status, one error shape, and a whole
change driven by the API alone with the codes read from the mails."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from countersign.config import Config
from countersign.gateway.web.app import create_app
from countersign.store.db import Store
from countersign.store.models import Event
from countersign.workflow import requests, sweeps
from countersign.workflow.policy import Policy
from tests.web_support import KEY, Mailbox, web_config

AUTH = {"Authorization": f"Bearer {KEY}"}
ERROR_KEYS = {"class", "message", "code"}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return web_config(tmp_path)


@pytest.fixture
def client(world: Store, config: Config) -> Iterator[TestClient]:
    app = create_app(world, config, health=lambda: True)
    with TestClient(app, headers=AUTH, raise_server_exceptions=False) as made:
        yield made


@pytest.fixture
def mailbox(world: Store, config: Config) -> Mailbox:
    return Mailbox(world, config)


def error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The one error shape, with the expected status (and code)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["class"].startswith("Client::" if status < 500 else "Server::")
    if code is not None:
        assert body["code"] == code, body
    return body


def change(client: TestClient, service: str = "example.com", **body: str) -> list[int]:
    body.setdefault("askingAccount", "admin@example.com")
    response = client.post(f"/v1/service/{service}/changeContact", json=body)
    assert response.status_code == 200, response.text
    ids: list[int] = response.json()
    return ids


# --- keys ---------------------------------------------------------------------------------


def test_no_keys_configured_means_the_api_is_off(world: Store, tmp_path: Path) -> None:
    app = create_app(world, web_config(tmp_path, keys={}), health=lambda: True)
    with TestClient(app, headers=AUTH) as client:
        body = error(client.get("/v1/contactChange"), 401, "unauthorized")
    assert "no api.keys configured" in body["message"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}],
    ids=["missing", "wrong", "not-bearer"],
)
def test_a_missing_or_wrong_key_is_401(
    world: Store, config: Config, headers: dict[str, str]
) -> None:
    with TestClient(create_app(world, config, health=lambda: True)) as client:
        response = client.get("/v1/contactChange", headers=headers)
    error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_any_configured_key_works_and_only_its_name_is_logged(
    world: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = web_config(tmp_path, keys={"billing": "key-one", "support": "key-two"})
    caplog.set_level(logging.INFO)
    with TestClient(create_app(world, config, health=lambda: True)) as client:
        assert (
            client.get("/v1/contactChange", headers={"Authorization": "Bearer key-two"}).json()
            == []
        )
    lines = [record.getMessage() for record in caplog.records]
    assert any("GET /v1/contactChange 200" in line and "key=support" in line for line in lines)
    assert not any("key-two" in line for line in lines)


# --- accounts and services ----------------------------------------------------------------


def test_account_create_read_update(client: TestClient) -> None:
    made = client.post(
        "/v1/account",
        json={"account": "Carol@Example.com", "zone": "eu", "language": "fr", "balanceDue": "3.50"},
    )
    assert made.status_code == 201, made.text
    assert made.json() == {
        "account": "carol@example.com",
        "contactEmail": "carol@example.com",
        "zone": "EU",
        "language": "fr",
        "paymentMethodValid": True,
        "balanceDue": "3.50",
    }
    updated = client.put(
        "/v1/account/carol@example.com",
        json={"contactEmail": "c@example.org", "paymentMethodValid": False, "balanceDue": "0"},
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["contactEmail"] == "c@example.org"
    assert updated.json()["paymentMethodValid"] is False
    assert client.get("/v1/account/CAROL@example.com").json() == updated.json()


def test_account_errors(client: TestClient) -> None:
    error(
        client.post("/v1/account", json={"account": "admin@example.com", "zone": "EU"}),
        409,
        "account-exists",
    )
    error(
        client.post("/v1/account", json={"account": "x@example.com", "zone": "E U"}),
        400,
        "bad-zone",
    )
    error(
        client.post("/v1/account", json={"account": "not-an-address", "zone": "EU"}),
        400,
        "bad-email",
    )
    error(
        client.post(
            "/v1/account", json={"account": "x@example.com", "zone": "EU", "language": "de"}
        ),
        422,
        "invalid",
    )
    error(
        client.post("/v1/account", json={"account": "x@example.com", "zone": "EU", "extra": 1}),
        422,
        "invalid",
    )
    error(
        client.post(
            "/v1/account", content=b"{not json", headers={"Content-Type": "application/json"}
        ),
        422,
    )
    error(client.put("/v1/account/x@example.com", json={"balanceDue": "-1"}), 422, "invalid")
    error(client.put("/v1/account/nobody@example.com", json={"zone": "EU"}), 404, "not-found")
    error(client.get("/v1/account/nobody@example.com"), 404, "not-found")


def test_service_create_read_update(client: TestClient) -> None:
    made = client.post(
        "/v1/service",
        json={
            "serviceDomain": "New.example",
            "contactAdmin": "admin@example.com",
            "contactTech": "tech@example.com",
            "contactBilling": "bill@example.com",
        },
    )
    assert made.status_code == 201, made.text
    assert made.json()["serviceDomain"] == "new.example"
    updated = client.put("/v1/service/new.example", json={"contactTech": "new@example.com"})
    assert updated.status_code == 200, updated.text
    assert updated.json() == {
        "serviceDomain": "new.example",
        "contactAdmin": "admin@example.com",
        "contactTech": "new@example.com",
        "contactBilling": "bill@example.com",
    }
    assert client.get("/v1/service/new.example").json() == updated.json()
    services = client.get("/v1/account/new@example.com/services").json()
    assert services == [{"serviceDomain": "new.example", "contactTypes": ["contactTech"]}]


def test_service_errors(client: TestClient) -> None:
    holders = {
        "contactAdmin": "admin@example.com",
        "contactTech": "admin@example.com",
        "contactBilling": "admin@example.com",
    }
    error(
        client.post("/v1/service", json={"serviceDomain": "example.com", **holders}),
        409,
        "service-exists",
    )
    error(
        client.post(
            "/v1/service",
            json={"serviceDomain": "x.example", **holders, "contactTech": "nobody@example.com"},
        ),
        404,
        "not-found",
    )
    error(client.post("/v1/service", json={"serviceDomain": "x.example"}), 422, "invalid")
    error(client.get("/v1/service/nothing.example"), 404, "not-found")
    error(client.put("/v1/service/nothing.example", json={}), 404, "not-found")
    error(
        client.put("/v1/service/example.com", json={"contactTech": "nobody@example.com"}),
        400,
        "unknown-account",
    )
    change(client, contactTech="new@example.com")
    # An open request holds its types: setting them directly would pull the rug from under it.
    error(
        client.put("/v1/service/example.com", json={"contactTech": "tech@example.com"}),
        409,
        "already-open",
    )
    assert (
        client.put(
            "/v1/service/example.com", json={"contactBilling": "bill@example.com"}
        ).status_code
        == 200
    )
    error(client.get("/v1/account/nobody@example.com/services"), 404, "not-found")


# --- contact changes ------------------------------------------------------------------------


def test_change_contact_returns_one_task_per_pair(client: TestClient) -> None:
    ids = change(client, contactTech="new@example.com", contactBilling="bill@example.com")
    assert len(ids) == 2
    tasks = [client.get(f"/v1/contactChange/{i}").json() for i in ids]
    assert {(t["toAccount"], tuple(t["contactTypes"])) for t in tasks} == {
        ("new@example.com", ("contactTech",)),
        ("bill@example.com", ("contactBilling",)),
    }
    task = tasks[0]
    assert task["state"] == "validatingByCustomers"
    assert task["askingAccount"] == "admin@example.com"
    assert task["dateRequest"].endswith("Z") and task["dateDone"] is None
    assert [v["decision"] for v in task["validators"]] == [None, None]


def test_change_contact_refusals(client: TestClient) -> None:
    url = "/v1/service/example.com/changeContact"
    error(client.post(url, json={"askingAccount": "admin@example.com"}), 400, "nothing-to-change")
    error(
        client.post(
            url, json={"askingAccount": "tech@example.com", "contactTech": "new@example.com"}
        ),
        400,
        "not-allowed",
    )
    error(
        client.post(
            url, json={"askingAccount": "admin@example.com", "contactTech": "ca@example.ca"}
        ),
        400,
        "zone-mismatch",
    )
    error(
        client.post(
            url, json={"askingAccount": "admin@example.com", "contactTech": "nobody@example.com"}
        ),
        400,
        "unknown-account",
    )
    error(
        client.post(
            "/v1/service/nothing.example/changeContact",
            json={"askingAccount": "admin@example.com", "contactTech": "new@example.com"},
        ),
        404,
        "unknown-service",
    )
    error(client.post(url, json={"contactTech": "new@example.com"}), 422, "invalid")
    change(client, contactTech="new@example.com")
    error(
        client.post(
            url, json={"askingAccount": "admin@example.com", "contactTech": "tech@example.com"}
        ),
        409,
        "already-open",
    )


def test_list_filters(client: TestClient) -> None:
    (tech,) = change(client, contactTech="new@example.com")
    (billing,) = change(client, contactBilling="bill@example.com")
    (split,) = change(
        client, "split.com", askingAccount="tech@example.com", contactTech="new@example.com"
    )
    assert (
        client.post(
            f"/v1/contactChange/{billing}/cancel", json={"askingAccount": "admin@example.com"}
        ).status_code
        == 200
    )

    def ids(**query: str) -> list[int]:
        response = client.get("/v1/contactChange", params=query)
        assert response.status_code == 200, response.text
        return sorted(response.json())

    assert ids() == [tech, billing, split]
    assert ids(askingAccount="admin@example.com") == [tech, billing]
    assert ids(toAccount="new@example.com") == [tech, split]
    assert ids(account="bill@example.com") == [billing]
    assert ids(state="aborted") == [billing]
    assert ids(askingAccount="tech@example.com", toAccount="new@example.com") == [split]
    assert ids(account="nobody@example.com") == []
    error(client.get("/v1/contactChange", params={"state": "sleeping"}), 422, "invalid")


def test_get_task_errors(client: TestClient) -> None:
    error(client.get("/v1/contactChange/999"), 404, "not-found")
    # Ids no request can have: the same clear 404, never a validation error or worse.
    for path in ("0", "99999999999999999999", "99999999999999999999999", "abc", "-1"):
        error(client.get(f"/v1/contactChange/{path}"), 404, "not-found")
        error(client.post(f"/v1/contactChange/{path}/accept", json={"token": "X"}), 404)


def test_accept_and_refuse(
    client: TestClient, mailbox: Mailbox, world: Store, policy: Policy
) -> None:
    (task,) = change(client, contactTech="new@example.com")
    admin = mailbox.latest("admin@example.com").code
    accepted = client.post(f"/v1/contactChange/{task}/accept", json={"token": admin})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["validators"][0]["decision"] == "accept"
    assert accepted.json()["validators"][0]["via"] == "api"
    # The same answer again (a retry, a double click): answered as done, nothing changes.
    again = client.post(f"/v1/contactChange/{task}/accept", json={"token": admin})
    assert again.status_code == 200 and again.json() == accepted.json()
    # Another answer with that code: it was single use, and says so.
    error(client.post(f"/v1/contactChange/{task}/refuse", json={"token": admin}), 409, "used")
    refused = client.post(
        f"/v1/contactChange/{task}/refuse", json={"token": mailbox.latest("new@example.com").code}
    )
    assert refused.status_code == 200, refused.text
    assert refused.json()["state"] == "refused"


def test_decision_errors(client: TestClient, mailbox: Mailbox) -> None:
    (task,) = change(client, contactTech="new@example.com")
    (other,) = change(client, contactBilling="bill@example.com")
    code = mailbox.latest("new@example.com").code
    error(
        client.post(f"/v1/contactChange/{other}/accept", json={"token": code}), 400, "unknown-code"
    )
    error(client.post(f"/v1/contactChange/{task}/accept", json={}), 422, "invalid")
    error(client.post(f"/v1/contactChange/{task}/accept", json={"token": ""}), 422, "invalid")
    error(client.post("/v1/contactChange/999/accept", json={"token": code}), 400, "unknown-code")
    assert (
        client.post(
            f"/v1/contactChange/{task}/cancel", json={"askingAccount": "admin@example.com"}
        ).status_code
        == 200
    )
    # A closed request's codes are dead.
    error(client.post(f"/v1/contactChange/{task}/accept", json={"token": code}), 409, "closed")


def test_wrong_codes_limit_their_source_never_the_code(
    client: TestClient, mailbox: Mailbox, world: Store
) -> None:
    (task,) = change(client, contactTech="new@example.com")
    good = mailbox.latest("new@example.com").code
    for _ in range(10):  # inbound.bad_code_limit
        error(
            client.post(f"/v1/contactChange/{task}/accept", json={"token": "AAAA-BBBB"}),
            400,
            "unknown-code",
        )
    body = error(
        client.post(f"/v1/contactChange/{task}/accept", json={"token": "AAAA-BBBB"}), 429, "locked"
    )
    assert "your address" in body["message"]
    # The validator's code still works, from that very address.
    accepted = client.post(f"/v1/contactChange/{task}/accept", json={"token": good})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["validators"][1]["decision"] == "accept"
    with world.read() as session:
        events = session.scalars(select(Event).where(Event.kind == "bad-code")).all()
    # The refused ones past the limit leave no event each.
    assert [(e.request_id, e.via) for e in events] == [(task, "api")] * 10


def test_resend_and_cancel(client: TestClient, mailbox: Mailbox) -> None:
    (task,) = change(client, contactTech="new@example.com")
    first = mailbox.latest("new@example.com").code
    resent = client.post(f"/v1/contactChange/{task}/resendEmail")
    assert resent.status_code == 200, resent.text
    second = mailbox.latest("new@example.com").code
    assert second != first
    error(
        client.post(f"/v1/contactChange/{task}/accept", json={"token": first}), 400, "unknown-code"
    )
    error(
        client.post(f"/v1/contactChange/{task}/cancel", json={"askingAccount": "new@example.com"}),
        400,
        "not-allowed",
    )
    error(client.post(f"/v1/contactChange/{task}/cancel", json={}), 422, "invalid")
    cancelled = client.post(
        f"/v1/contactChange/{task}/cancel", json={"askingAccount": "admin@example.com"}
    )
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "aborted"
    error(
        client.post(
            f"/v1/contactChange/{task}/cancel", json={"askingAccount": "admin@example.com"}
        ),
        409,
        "closed",
    )
    error(client.post(f"/v1/contactChange/{task}/resendEmail"), 409, "closed")
    error(client.post("/v1/contactChange/999/resendEmail"), 404, "not-found")
    error(
        client.post("/v1/contactChange/999/cancel", json={"askingAccount": "admin@example.com"}),
        404,
        "not-found",
    )


def test_expired_code_is_a_conflict(
    client: TestClient, mailbox: Mailbox, world: Store, policy: Policy
) -> None:
    (task,) = change(client, contactTech="new@example.com")
    code = mailbox.latest("new@example.com").code
    with world.write() as session:
        request = requests.load_request(session, task)
        request.expires_at = request.date_request
    error(client.post(f"/v1/contactChange/{task}/accept", json={"token": code}), 409, "expired")
    assert client.get(f"/v1/contactChange/{task}").json()["state"] == "expired"


def test_unknown_routes_and_methods_have_the_same_shape(client: TestClient) -> None:
    error(client.get("/v1/nothing"), 404, "not-found")
    error(client.delete("/v1/contactChange/1"), 405, "http-405")


def test_a_crash_is_a_500_in_the_same_shape(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(requests, "show", boom)
    body = error(client.get("/v1/contactChange/1"), 500, "internal")
    assert body == {
        "class": "Server::InternalServerError",
        "message": "internal error",
        "code": "internal",
    }
    assert any("GET /v1/contactChange/1 failed" in r.getMessage() for r in caplog.records)


# --- a whole change by the API alone -------------------------------------------------------


def test_a_complete_change_driven_by_the_api(
    client: TestClient,
    mailbox: Mailbox,
    world: Store,
    policy: Policy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for account in ("dora@example.net", "eve@example.net"):
        assert (
            client.post("/v1/account", json={"account": account, "zone": "EU"}).status_code == 201
        )
    assert (
        client.post(
            "/v1/service",
            json={
                "serviceDomain": "shop.example",
                "contactAdmin": "dora@example.net",
                "contactTech": "dora@example.net",
                "contactBilling": "dora@example.net",
            },
        ).status_code
        == 201
    )
    (task,) = change(
        client, "shop.example", askingAccount="dora@example.net", contactAdmin="eve@example.net"
    )
    codes = {to: mailbox.latest(to).code for to in ("dora@example.net", "eve@example.net")}
    for to, code in codes.items():
        mail = mailbox.latest(to)
        assert mail.request_id == task and mail.link.endswith(f"/confirm/{task}?token={code}")
        answer = client.post(f"/v1/contactChange/{task}/accept", json={"token": code})
        assert answer.status_code == 200, answer.text
    assert client.get(f"/v1/contactChange/{task}").json()["state"] == "checkValidity"
    assert sweeps.apply_ready(world, policy) == 1  # what the daemon's apply sweep does next
    done = client.get(f"/v1/contactChange/{task}").json()
    assert done["state"] == "done" and done["dateDone"] is not None
    assert client.get("/v1/account/eve@example.net/services").json() == [
        {"serviceDomain": "shop.example", "contactTypes": ["contactAdmin"]}
    ]
    kinds = {(m.kind, m.to) for m in mailbox.deliver()}
    assert ("completed", "eve@example.net") in kinds
    for record in caplog.records:
        for code in codes.values():
            assert code not in record.getMessage()
