"""Retention: `countersign purge --older-than 90d`, and the daily purge of `retention`.

The store forgets the mail of finished requests (workflow/operations.purge);
here the copies of their notices in the outbox Maildir go too, since each
holds the same text (a dead code included) as the row did.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from pathlib import Path

from countersign.config import Config, parse_duration
from countersign.store.db import Store
from countersign.workflow.lifecycle import utcnow
from countersign.workflow.operations import purge

log = logging.getLogger("countersign.retention")
_REQUEST_HEADER = re.compile(rb"^X-Countersign-Request:\s*(\d+)\s*$", re.I | re.M)
_HEAD = 16 * 1024  # the headers of a notice, well within


def purge_all(
    store: Store, config: Config, older_than: timedelta, now: datetime | None = None
) -> dict[str, int]:
    now = now or utcnow()
    counts, ids, hooks = purge(store, older_than, now=now)
    counts["files"] = _purge_maildir(config.outbox_dir, set(ids), now - older_than)
    log.info(
        "purged %(requests)d request(s) finished before the cut: %(mail)d mail, "
        "%(notices)d notices, %(codes)d code hashes, %(files)d outbox files, "
        "%(hooks)d hook deliveries",
        {**counts, "hooks": hooks},
    )
    return counts


def _purge_maildir(outbox: Path, request_ids: set[int], cut: datetime) -> int:
    removed = 0
    if not request_ids:
        return 0
    for folder in ("new", "cur"):
        for path in (outbox / folder).glob("*") if (outbox / folder).is_dir() else ():
            try:
                if path.stat().st_mtime >= cut.timestamp():
                    continue
                with path.open("rb") as file:
                    found = _REQUEST_HEADER.search(file.read(_HEAD).split(b"\n\n", 1)[0])
                if found and int(found[1]) in request_ids:
                    path.unlink()
                    removed += 1
            except OSError:  # taken by the pickup meanwhile: not ours to remove any more
                continue
    return removed


def daily_purge(store: Store, config: Config) -> int:
    """The `retention` sweep: what serve runs once a day when `retention` is set."""
    purge_all(store, config, parse_duration(config.retention))
    return 0  # never "more to do at once": the next purge is tomorrow's
