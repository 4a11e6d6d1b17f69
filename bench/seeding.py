"""The data both mail benchmarks start from: pairs of accounts, a service each, a request each."""

from __future__ import annotations

from countersign.rules.contacts import ContactType
from countersign.store.db import Store
from countersign.workflow.importer import import_lines
from countersign.workflow.policy import Policy
from countersign.workflow.requests import change_contacts


def seed_requests(store: Store, notices: int) -> None:
    """notices/2 requests, each mailing its two validators a confirm-request."""
    pairs = notices // 2
    lines = [f'{{"account": "admin{i}@bench.test", "zone": "EU"}}' for i in range(pairs)]
    lines += [f'{{"account": "new{i}@bench.test", "zone": "EU"}}' for i in range(pairs)]
    lines += [
        f'{{"service": "s{i}.bench.test", "contactAdmin": "admin{i}@bench.test", '
        f'"contactTech": "admin{i}@bench.test", "contactBilling": "admin{i}@bench.test"}}'
        for i in range(pairs)
    ]
    import_lines(store, lines)
    policy = Policy()
    for i in range(pairs):
        change_contacts(
            store,
            f"s{i}.bench.test",
            f"admin{i}@bench.test",
            {ContactType.TECH: f"new{i}@bench.test"},
            policy,
        )
