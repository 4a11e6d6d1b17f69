"""What an act can answer besides success: each becomes exit status 1 on the
command line, a 4xx on the API, a command-result mail or a page."""

from __future__ import annotations

from countersign.rules.contacts import Refusal
from countersign.rules.replies import Reason

__all__ = ["BadCode", "CodeRefused", "NotFound", "Refusal"]


class NotFound(Refusal):
    def __init__(self, what: str, key: object) -> None:
        super().__init__("not-found", f"unknown {what}: {key}")


class BadCode(Refusal):
    """A validation code that cannot be used: ``code`` says why, for programs.

    ``account_id`` is the account the code belongs to when it is known, so
    that a mailed answer goes to that account and never to a stranger;
    ``request_id`` is then the request it was for (the answer is about it).
    """

    def __init__(
        self,
        code: str,
        message: str,
        account_id: int | None = None,
        request_id: int | None = None,
    ) -> None:
        super().__init__(code, message)
        self.account_id = account_id
        self.request_id = request_id


class CodeRefused(BadCode):
    """A code refused by the reply policy: its ``reason`` is one of rules/replies.Reason."""

    def __init__(
        self,
        reason: Reason,
        message: str,
        account_id: int | None = None,
        request_id: int | None = None,
    ) -> None:
        super().__init__(str(reason), message, account_id, request_id)
        self.reason = reason
