"""A real HTTP receiver on 127.0.0.1 for webhook and applier tests.

It checks every signature with the `verify` that docs/api.md shows receivers
(read from the document itself, so the docs cannot drift from what works).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def docs_verify() -> Callable[..., bool]:
    """The verification helper exactly as docs/api.md prints it."""
    text = DOCS.read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify" in b)
    namespace: dict[str, Any] = {}
    exec(block, namespace)  # the document's own code
    return namespace["verify"]  # type: ignore[no-any-return]


class Receiver:
    """Answers POSTs; records each verified one; 401 for a bad signature."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.verify = docs_verify()
        self.received: list[dict[str, Any]] = []  # verified bodies, in arrival order
        self.raw: list[tuple[str, bytes]] = []  # (signature header, body) as they came
        self.bad_signatures = 0
        self.refused_with: list[int] = []  # statuses answered other than 2xx
        self.fail_until = 0.0  # monotonic: answer `fail_status` until then
        self.fail_status = 500
        self.answer: tuple[int, dict[str, Any]] = (200, {"ok": True})
        self.hold_first = 0.0  # seconds to sit on the first POST before answering
        self.held = threading.Event()  # set once the first POST is being held
        self._lock = threading.Lock()
        self._listen(0)
        self.port = int(self.server.server_address[1])

    def _listen(self, port: int) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def fail_for(self, seconds: float, status: int = 500) -> None:
        self.fail_until, self.fail_status = time.monotonic() + seconds, status

    def down_for(self, seconds: float) -> None:
        """Not listening at all (connections refused) for ``seconds``, then back on its port."""
        self.close()
        timer = threading.Timer(seconds, self._listen, args=(self.port,))
        timer.daemon = True
        timer.start()
        self._back = timer

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, signature: str, body: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.raw.append((signature, body))
            if not self.verify(self.secret, signature, body):
                self.bad_signatures += 1
                return 401, {"message": "bad signature"}
            first = len(self.raw) == 1
        if first and self.hold_first:
            self.held.set()
            time.sleep(self.hold_first)
        with self._lock:
            if time.monotonic() < self.fail_until:
                self.refused_with.append(self.fail_status)
                return self.fail_status, {"message": "not now"}
            self.received.append(json.loads(body))
            return self.answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, document = receiver._handle(
                    self.headers.get("Countersign-Signature", ""), body
                )
                answer = json.dumps(document).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the sender went away (killed): nothing to answer

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
