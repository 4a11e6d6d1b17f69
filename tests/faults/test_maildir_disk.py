"""Show 5: an outbox Maildir on a fresh volume (no tmp/ new/ cur/), then a full disk.

A real tmpfs of 512 kB mounted over the outbox folder after the daemon's
transport was made (as a volume mounted late would be): the folders are made
on the first write.  Then the disk fills: the writes that fail leave nothing in
tmp/ and their notices wait; once space returns, every notice is delivered
exactly once (one file per outbox row: a write tried again replaces its file).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bench.seeding import seed_requests
from countersign.config import Config
from countersign.gateway.mail_out.delivery import Deliverer
from countersign.gateway.mail_out.maildir import MaildirTransport
from countersign.gateway.mail_out.wire import Ready
from countersign.store.db import Store
from countersign.store.models import OutboxMessage
from tests.cli_helpers import fresh_database
from tests.conftest import missing_server

pytestmark = pytest.mark.faults
NOTICES = 60


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """Where the tmpfs will be mounted: {data_dir}/outbox, not mounted yet."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        missing_server("mounting a tmpfs needs root")
    outbox = tmp_path / "var" / "outbox"
    outbox.mkdir(parents=True)
    yield outbox
    subprocess.run(["umount", str(outbox)], check=False, capture_output=True)


def statuses(store: Store) -> dict[str, int]:
    with store.read() as session:
        rows = session.execute(
            select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
        )
        return {status: n for status, n in rows}


async def drain(deliverer: Deliverer, now: datetime) -> None:
    while await deliverer.deliver_due(now):
        pass


async def test_a_fresh_volume_then_a_full_disk_delivers_every_notice_once(
    tmp_path: Path, volume: Path
) -> None:
    store = Store(fresh_database(tmp_path / "var" / "countersign.db"))
    seed_requests(store, NOTICES)
    deliverer = Deliverer(store, Config(data_dir=str(tmp_path / "var")))
    # Mounted after the transport was made: a fresh volume, no tmp/ new/ cur/.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(volume)], check=True)
    assert list(volume.iterdir()) == []
    filler = volume / "filler"
    filler.write_bytes(b"x" * (512 * 1024 - 96 * 1024))  # leaves room for some notices only
    try:
        now = datetime.now(UTC)
        await drain(deliverer, now)
        full = statuses(store)
        written = sorted(p.name for p in (volume / "new").iterdir())
        left_in_tmp = list((volume / "tmp").iterdir())
        errors = {row.last_error for row in _waiting(store)}
        filler.unlink()  # space comes back
        await drain(deliverer, now + timedelta(minutes=3))  # past every retry's backoff
    finally:
        deliverer.close()
    files = sorted((volume / "new").iterdir())
    ids = [BytesHeaderParser().parsebytes(f.read_bytes())["Message-ID"] for f in files]
    print(
        f"\nfresh volume, then a full disk: {len(written)} of {NOTICES} notices written"
        f" while full ({full}), {len(left_in_tmp)} files left in tmp/;"
        f"\nafter space returned: {statuses(store)}, {len(files)} files in new/,"
        f" {len(set(ids))} distinct Message-IDs, {len(list((volume / 'tmp').iterdir()))} in tmp/"
    )
    assert {"tmp", "new", "cur"} <= {p.name for p in volume.iterdir()}
    assert 0 < len(written) < NOTICES and full.get("pending", 0) == NOTICES - len(written)
    assert left_in_tmp == []
    assert any("No space left" in (e or "") for e in errors), errors
    assert statuses(store) == {"sent": NOTICES}
    assert len(files) == len(set(ids)) == NOTICES
    assert list((volume / "tmp").iterdir()) == []
    store.dispose()


def _waiting(store: Store) -> list[OutboxMessage]:
    with store.read() as session:
        return list(session.scalars(select(OutboxMessage).where(OutboxMessage.status != "sent")))


def test_a_write_tried_again_replaces_its_file_and_lost_folders_come_back(tmp_path: Path) -> None:
    box = tmp_path / "outbox"
    transport = MaildirTransport(box)
    notice = Ready(outbox_id=7, recipient="a@example.com", data=b"Subject: x\r\n\r\nbody\r\n")
    assert transport._write_all([notice])[0].error is None
    shutil.rmtree(box)  # the folder went (a volume unmounted and mounted again, empty)
    assert transport._write_all([notice, notice])[1].error is None  # a retry after a kill
    assert [p.name for p in (box / "new").iterdir()] == [transport.file_name(7)]
    assert (box / "new" / transport.file_name(7)).read_bytes() == b"Subject: x\n\nbody\n"
