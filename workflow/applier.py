"""The applier's answers: apply.url made the change, refused it, or could not be reached.

A request in ``doing`` waits for its ``request.apply`` delivery to be
answered.  Each answer is recorded in one transaction with the request's new
state, and only while the request is still ``doing``: a second answer for the
same event (the daemon killed between the POST and the record, the row sent
again) changes nothing, so Countersign's own contacts are set once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from countersign.rules.contacts import ContactType
from countersign.rules.states import State
from countersign.store.db import Store
from countersign.store.models import ChangeRequest, HookDelivery, Service
from countersign.workflow.hook_queue import delivered, failed
from countersign.workflow.lifecycle import finish, load_request, record
from countersign.workflow.outbox import RetryPolicy
from countersign.workflow.policy import Policy


def set_contacts(service: Service, request: ChangeRequest) -> None:
    """Countersign's own store follows the change: the new account holds the types."""
    new = request.to_account
    for name in request.contact_types:
        contact_type = ContactType(name)
        if contact_type is ContactType.ADMIN:
            service.admin = new
        elif contact_type is ContactType.TECH:
            service.tech = new
        else:
            service.billing = new


def _doing(session: Session, row: HookDelivery | None) -> ChangeRequest | None:
    if row is None or row.status != "sending" or row.request_id is None:
        return None
    request = load_request(session, row.request_id, lock=True)
    return request if request.state == State.DOING else None


def applied(store: Store, delivery_id: int, now: datetime, policy: Policy) -> None:
    """A 2xx: the system of record made the change; so does Countersign, and it is done."""
    with store.write() as session:
        row = session.get(HookDelivery, delivery_id, with_for_update=True)
        request = _doing(session, row)
        if row is not None and row.status == "sending":
            delivered(row, now)
        if request is None:
            return
        set_contacts(request.service, request)
        request.error = None
        record(session, "applied", now, request=request, types=list(request.contact_types))
        finish(session, request, State.DONE, now, policy)


def refused(store: Store, delivery_id: int, message: str, now: datetime, policy: Policy) -> None:
    """A 409 or 422: the system of record will not make it; the request ends in error."""
    with store.write() as session:
        row = session.get(HookDelivery, delivery_id, with_for_update=True)
        request = _doing(session, row)
        if row is not None and row.status == "sending":
            delivered(row, now)
            row.last_error = f"refused: {message}"[:2000]
        if request is None:
            return
        request.error = message[:500]
        finish(session, request, State.ERROR, now, policy, reason="apply-refused")


def unanswered(
    store: Store, delivery_id: int, error: str, now: datetime, policy: Policy, retry: RetryPolicy
) -> None:
    """No usable answer: tried again later (the request says why), or given up: error."""
    with store.write() as session:
        row = session.get(HookDelivery, delivery_id, with_for_update=True)
        request = _doing(session, row)
        if row is None or row.status != "sending":
            return
        gave_up = failed(row, error, now, retry)
        if request is None:
            return
        if not gave_up:
            request.error = f"applying: {error}; trying again at {row.next_attempt_at:%H:%M:%S}Z"
            return
        request.error = f"could not be applied: {error}"[:500]
        finish(session, request, State.ERROR, now, policy, reason="apply-gave-up")
