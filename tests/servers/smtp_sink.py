"""An SMTP sink on 127.0.0.1 with scripted failures, for delivery tests.

:class:`SmtpSink` runs aiosmtpd in its own thread (via ``Controller``) and
records every accepted message. Tests script what the next deliveries meet::

    sink.fail_next("451 4.3.0 Try again later")            # at DATA
    sink.fail_next("550 5.1.1 No such user", stage="rcpt")
    sink.drop_after_data_next()    # read the message, hang up without a reply
    sink.stop(); ...; sink.start() # relay down for a while, same port after

Scripted actions form one FIFO queue. Each SMTP command (MAIL, RCPT, DATA)
consumes the head of the queue only when the head is meant for that stage, so
``fail_next(..., stage="data")`` lets MAIL and RCPT through and fails the next
DATA, and successive actions apply to successive transactions in order.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from functools import cached_property
from types import TracebackType
from typing import Any, Literal, Self

from aiosmtpd.controller import Controller

from tests.servers.dovecot import free_port

__all__ = ["ReceivedMessage", "Rejection", "SmtpSink", "Stage"]

Stage = Literal["mail", "rcpt", "data"]

_REPLY_RE = re.compile(r"^[2-5]\d\d( |$)")

# The name the sink greets with. Passing it explicitly matters: without it,
# aiosmtpd calls socket.getfqdn() on every connection, which costs
# milliseconds here and seconds where DNS is slow.
SINK_HOSTNAME = "sink.countersign.test"


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the sink received via DATA."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    peer: tuple[str, int] | None
    received_at: float = field(default_factory=time.time)

    # Parsed lazily: the sink may take thousands of messages per second in
    # throughput tests, and most tests never look at the headers.
    @cached_property
    def message_id(self) -> str | None:
        headers = BytesHeaderParser().parsebytes(self.data)
        value = headers.get("Message-ID")
        return str(value).strip() if value is not None else None

    @cached_property
    def message(self) -> EmailMessage:
        return BytesParser(policy=policy.default).parsebytes(self.data)


@dataclass(frozen=True)
class Rejection:
    """A scripted failure that was served (``reply`` None: connection dropped)."""

    stage: Stage
    reply: str | None
    mail_from: str | None
    rcpt_tos: tuple[str, ...]


@dataclass(frozen=True)
class _Action:
    stage: Stage
    reply: str | None  # None: close the connection without replying


class _Handler:
    """aiosmtpd handler; runs on the Controller's thread and event loop."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        reply = self._sink._scripted("mail", envelope)
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self._sink._recipient_reply(address)
        if reply is None:
            reply = self._sink._scripted("rcpt", envelope)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        action = self._sink._take("data")
        message = ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content or envelope.content),
            peer=session.peer,
        )
        if action is not None and action.reply is None:
            # The message arrived but the client never learns it: the classic
            # "was it delivered?" ambiguity. abort() rather than close() so no
            # reply can be flushed; aiosmtpd's later write of our return value
            # goes to a dead transport and is discarded.
            self._sink._record_drop(message, envelope)
            server.transport.abort()
            return "421 4.4.2 Connection dropped by test"
        if action is not None:
            assert action.reply is not None
            self._sink._record_rejection("data", action.reply, envelope)
            return action.reply
        self._sink._record(message)
        return "250 2.0.0 OK: queued"


class SmtpSink:
    """An aiosmtpd sink on a fixed port with failure injection.

    Safe to use from the test's thread (or event loop) while the server runs
    on its own thread: all shared state sits behind one condition variable.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.hostname = SINK_HOSTNAME
        self._cond = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._dropped: list[ReceivedMessage] = []
        self._rejections: list[Rejection] = []
        self._script: deque[_Action] = deque()
        self._recipient_replies: dict[str, str] = {}
        self._controller: Controller | None = None

    # -- lifecycle -----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        """Listen on ``self.port`` (the same port across stop/start)."""
        if self._controller is not None:
            return
        # A Controller closes its event loop on stop, so each start needs a
        # new one. create_server sets SO_REUSEADDR, so rebinding the port
        # right after stop() works despite TIME_WAIT connections.
        controller = Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            server_hostname=self.hostname,
            ready_timeout=10.0,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Close the listener and all connections (clients see a disconnect)."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- scripting -----------------------------------------------------------

    def fail_next(self, reply: str, *, stage: Stage = "data", times: int = 1) -> None:
        """Answer the next ``times`` commands of ``stage`` with ``reply``.

        ``reply`` is a full SMTP reply line such as "451 4.3.0 Try again
        later". At stage "rcpt" only the recipient being added fails; with
        several recipients the rest of the transaction goes on.
        """
        if not _REPLY_RE.match(reply) or reply[0] in "23":
            raise ValueError(f"not a 4xx/5xx SMTP reply: {reply!r}")
        with self._cond:
            self._script.extend(_Action(stage, reply) for _ in range(times))

    def drop_after_data_next(self, times: int = 1) -> None:
        """Read the next message in full, then close without a reply."""
        with self._cond:
            self._script.extend(_Action("data", None) for _ in range(times))

    def reject_recipient(self, address: str, reply: str = "550 5.1.1 No such user") -> None:
        """Always refuse RCPT TO ``address`` (case-insensitive), until reset()."""
        if not _REPLY_RE.match(reply) or reply[0] in "23":
            raise ValueError(f"not a 4xx/5xx SMTP reply: {reply!r}")
        with self._cond:
            self._recipient_replies[address.lower()] = reply

    def pending_actions(self) -> int:
        """Scripted actions not yet consumed."""
        with self._cond:
            return len(self._script)

    def reset(self) -> None:
        """Forget received messages, rejections and all scripted behaviour."""
        with self._cond:
            self._messages.clear()
            self._dropped.clear()
            self._rejections.clear()
            self._script.clear()
            self._recipient_replies.clear()

    # -- observation ---------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Messages accepted with a 250 reply, in arrival order (a copy)."""
        with self._cond:
            return list(self._messages)

    @property
    def dropped(self) -> list[ReceivedMessage]:
        """Messages received in full but answered by hanging up."""
        with self._cond:
            return list(self._dropped)

    @property
    def rejections(self) -> list[Rejection]:
        """Scripted failures served so far, including drops."""
        with self._cond:
            return list(self._rejections)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages were accepted; return them all.

        Raises TimeoutError naming how many arrived. Do not call this from the
        event loop that runs the code under test (it would block that loop):
        use :meth:`wait_for_async` there.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(
                    f"SMTP sink got {len(self._messages)} of {count} messages in {timeout}s "
                    f"({len(self._dropped)} dropped, {len(self._rejections)} rejected)"
                )
            return list(self._messages)

    async def wait_for_async(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """:meth:`wait_for` without blocking the calling event loop."""
        return await asyncio.to_thread(self.wait_for, count, timeout)

    # -- called by the handler on the server thread ---------------------------

    def _take(self, stage: Stage) -> _Action | None:
        with self._cond:
            if self._script and self._script[0].stage == stage:
                return self._script.popleft()
            return None

    def _scripted(self, stage: Stage, envelope: Any) -> str | None:
        action = self._take(stage)
        if action is None:
            return None
        if action.reply is None:  # only "data" actions drop; keep mypy honest
            return None
        self._record_rejection(stage, action.reply, envelope)
        return action.reply

    def _recipient_reply(self, address: str) -> str | None:
        with self._cond:
            return self._recipient_replies.get(address.lower())

    def _record(self, message: ReceivedMessage) -> None:
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()

    def _record_drop(self, message: ReceivedMessage, envelope: Any) -> None:
        with self._cond:
            self._dropped.append(message)
            self._rejections.append(
                Rejection("data", None, envelope.mail_from, tuple(envelope.rcpt_tos))
            )
            self._cond.notify_all()

    def _record_rejection(self, stage: Stage, reply: str, envelope: Any) -> None:
        with self._cond:
            self._rejections.append(
                Rejection(stage, reply, envelope.mail_from, tuple(envelope.rcpt_tos))
            )
            self._cond.notify_all()
