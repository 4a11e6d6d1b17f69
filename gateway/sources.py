"""Who is asking, for the guess limits: the client's address, or the one a trusted
proxy forwards.

Behind a reverse proxy every request comes from the proxy's address, so one
guesser would use up everyone's wrong codes.  ``web.trusted_proxies`` names the
proxies whose ``X-Forwarded-For`` is believed: the client is then the rightmost
address of that header that is not itself a trusted proxy (the ones to its left
were written by whoever sent the request, and can be anything).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.requests import Request

from countersign.config import Config
from countersign.workflow.guess_limits import source_key

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_HOPS = 20


@dataclass(frozen=True)
class ClientSources:
    trusted: tuple[Network, ...] = ()

    @classmethod
    def from_config(cls, config: Config) -> ClientSources:
        return cls(tuple(ipaddress.ip_network(p, strict=False) for p in config.web.trusted_proxies))

    def of(self, request: Request) -> str:
        """The source a request counts against."""
        peer = request.client.host if request.client is not None else "unknown"
        if self.trusted and self._is_trusted(peer):
            forwarded = _hops(request.headers.getlist("x-forwarded-for"))
            for hop in reversed(forwarded):
                if not self._is_trusted(hop):
                    return source_key(hop) if _is_address(hop) else source_key(peer)
        return source_key(peer)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)


def _hops(values: Sequence[str]) -> list[str]:
    hops = [hop.strip() for value in values for hop in value.split(",")]
    return [hop for hop in hops if hop][-MAX_HOPS:]


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
