"""Show 4: the daemon's PostgreSQL stopped for 15 s during intake, on a private cluster.

Meanwhile SMTP answers only 451 (never 250: nothing can be stored); the daemon
carries on by itself when the database is back, with no restart; the relay
receives no notice twice (deliveries answered during the outage are kept in
memory and recorded after); the log says the store was lost once and back
once, without a traceback.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest

from countersign.store.db import Store
from countersign.store.migrate import upgrade
from tests.conftest import missing_server
from tests.faults import pgcluster
from tests.faults.harness import (
    Daemon,
    Sender,
    doubled,
    open_notices,
    seed_with_replies,
    wait_until_settled,
)
from tests.servers.smtp_sink import SmtpSink

pytestmark = pytest.mark.faults
REQUESTS = 150  # 300 replies
OUTAGE = 15.0
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ (\w+) ")


@pytest.fixture
def cluster() -> Iterator[pgcluster.PrivateCluster]:
    why = pgcluster.available()
    if why:
        missing_server(why)
    made = pgcluster.PrivateCluster()
    try:
        made.start()
        yield made
    finally:
        made.remove()


@dataclass(frozen=True)
class Outage:
    stopping: float  # time.time() as the stop began
    down: float  # ... once it was down
    up: float  # ... as it was started again
    web: dict[str, tuple[int, str]]  # what the web answered meanwhile


def cut(cluster: pgcluster.PrivateCluster, daemon: Daemon) -> Outage:
    """Stop the database for OUTAGE seconds, asking the web half-way through."""
    stopping = time.time()
    cluster.stop()
    down = time.time()
    time.sleep(OUTAGE / 2)
    web = web_answers(daemon.web_port)
    time.sleep(max(0.0, down + OUTAGE - time.time()))
    up = time.time()
    cluster.start()
    return Outage(stopping, down, up, web)


def test_a_database_outage_during_intake_answers_451_and_recovers_alone(
    tmp_path: Path, cluster: pgcluster.PrivateCluster
) -> None:
    store = Store(cluster.url)
    upgrade(store.engine)
    replies = seed_with_replies(store, REQUESTS)
    relay = SmtpSink()
    relay.start()
    daemon = Daemon(
        "alone",
        tmp_path,
        cluster.url,
        COUNTERSIGN_OUTBOUND_SMTP_HOST="127.0.0.1",
        COUNTERSIGN_OUTBOUND_SMTP_PORT=str(relay.port),
        COUNTERSIGN_API_KEYS='{"ops": "fault-test-key"}',
    )
    sender = Sender(replies, [daemon.smtp_port], lanes=4, pace=0.1)
    try:
        daemon.start()
        sender.start()
        sender.wait_for(len(replies) // 3, timeout=120)
        outage = cut(cluster, daemon)
        sender.finish(timeout=120)
        counts, _ = wait_until_settled(store, lambda: sender.acked, timeout=60)
        settled = time.time() - outage.up
        during = [code for at, _, code in sender.answers if outage.down + 1 < at < outage.up]
        ids = [m.message_id for m in relay.messages]
        lines = outage_lines(daemon.log(), outage.stopping)
        web_up = web_answers(daemon.web_port)
        report(
            outage,
            during,
            counts,
            settled,
            web_up,
            ids,
            lines,
            f"{len(sender.acked)} of {len(replies)}",
        )
        assert during and set(during) == {451}, sorted(set(during))
        assert outage.web == {
            "healthz": (503, "application/json"),
            "page": (503, "text/html; charset=utf-8"),
            "api": (503, "application/json"),
        }
        assert {answer[0] for answer in web_up.values()} == {200}, web_up
        assert len(sender.acked) == len(replies)
        assert counts.lost == counts.undecided == counts.decided_twice == counts.claimed == 0
        assert counts.outbox_open == 0, (counts, open_notices(store))
        assert doubled(ids) == 0
        assert_quiet(daemon.log(), lines)
        assert daemon.stop() == 0, daemon.log()
    finally:
        sender.process.kill()
        daemon.stop()
        relay.stop()
        store.dispose()


def report(
    outage: Outage,
    during: list[int],
    counts: object,
    settled: float,
    web_up: dict[str, tuple[int, str]],
    ids: list[str | None],
    lines: list[str],
    acked: str,
) -> None:
    print(
        f"\ndatabase down {OUTAGE:.0f}s: {len(during)} SMTP answers meanwhile,"
        f" {during.count(451)} of them 451, {during.count(250)} of them 250;"
        f"\nafter it: {acked} replies answered 250; {counts};"
        f" settled {settled:.1f}s after the database came back (no restart)"
        f"\nweb while down: {outage.web}\nweb after: {web_up}"
        f"\nrelay: {len(ids)} messages, doubled {doubled(ids)};"
        f" log lines at WARNING or above from the outage on: {len(lines)}"
        + "".join(f"\n  {line}" for line in lines)
    )


def assert_quiet(log: str, lines: list[str]) -> None:
    """One line when the store was lost, one when it was back, a few at most, no traceback."""
    assert "Traceback" not in log, log
    assert sum("store lost" in line for line in lines) == 1, lines
    assert sum("store back after" in line for line in lines) == 1, lines
    assert len(lines) <= 5, lines


def web_answers(port: int) -> dict[str, tuple[int, str]]:
    """Status and content type of /healthz, the link's page and the API."""
    base = f"http://127.0.0.1:{port}"
    asked = {
        "healthz": Request(f"{base}/healthz"),
        "page": Request(f"{base}/confirm/1?token=x"),
        "api": Request(
            f"{base}/v1/contactChange/1", headers={"Authorization": "Bearer fault-test-key"}
        ),
    }
    answers = {}
    for name, request in asked.items():
        try:
            with urlopen(request, timeout=30) as response:
                answers[name] = (response.status, response.headers["Content-Type"])
        except HTTPError as error:
            answers[name] = (error.code, error.headers["Content-Type"])
    return answers


def outage_lines(log: str, since: float) -> list[str]:
    """The daemon's log lines at WARNING or above, from ``since`` (time.time()) on."""
    start = datetime.fromtimestamp(int(since)).strftime("%Y-%m-%d %H:%M:%S")
    found = []
    for line in log.splitlines():
        stamp = _STAMP.match(line)
        if stamp and stamp[1] >= start and stamp[2] in ("WARNING", "ERROR", "CRITICAL"):
            found.append(line)
    return found
