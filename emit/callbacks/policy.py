"""How webhooks are delivered: tries, backoff with jitter, timeouts, per-host limits, and
which targets are refused. Pure: the delays take the jitter as an argument."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import socket
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallbackPolicy:
    tries: int = 8
    """Tries in all, the first included (8: the last about 18 minutes after the first)."""
    first_delay: float = 1.0
    factor: float = 3.0
    spread: float = 0.2
    """Jitter: each wait is spread by up to ±20%."""
    timeout: float = 10.0
    per_host: int = 4
    """Deliveries to one host at a time: a slow receiver holds only its own slots."""
    allow_private: bool = False
    """Deliver to loopback, link-local and private addresses (tests, trusted networks)."""

    def __post_init__(self) -> None:
        if not all(map(math.isfinite, (self.first_delay, self.factor, self.spread, self.timeout))):
            raise ValueError("first_delay, factor, spread and timeout must be finite numbers")
        if self.tries < 1 or self.first_delay < 0 or self.factor < 1 or self.per_host < 1:
            raise ValueError("tries >= 1, first_delay >= 0, factor >= 1, per_host >= 1")
        if not 0 <= self.spread < 1 or not self.timeout > 0:
            raise ValueError("0 <= spread < 1 and timeout > 0")
        try:
            longest = self.delay(self.tries - 1, 1.0) if self.tries > 1 else 0.0
        except OverflowError:
            longest = math.inf
        if not math.isfinite(longest):
            # Refused here rather than met as an OverflowError at the last retries.
            raise ValueError(
                "the longest wait between webhook tries (first_delay * factor ** (tries - 2))"
                " is too long: fewer tries or a smaller factor"
            )

    def delay(self, tries: int, jitter: float) -> float:
        """The wait after ``tries`` failed tries (>= 1); ``jitter`` is uniform in [0, 1).

        >>> CallbackPolicy().delay(1, 0.5), CallbackPolicy().delay(3, 0.5)
        (1.0, 9.0)
        """
        base = self.first_delay * self.factor ** (tries - 1)
        return base * (1 - self.spread + 2 * self.spread * jitter)


def refused_address(address: str) -> bool:
    """Loopback, link-local, private, multicast or reserved: not a public target."""
    ip = ipaddress.ip_address(address.split("%")[0])
    return not ip.is_global or ip.is_multicast


def refused_without_lookup(host: str) -> bool:
    """Whether ``host`` (a URL's host, as `urllib.parse` gives it: lower case, no
    brackets) is a refused target that needs no DNS to tell: a literal address that
    `refused_address` refuses (in any form the resolver takes as one, such as
    ``2130706433`` for 127.0.0.1), or ``localhost`` and its subdomains (RFC 6761: always
    loopback). Other names are judged when they are resolved, at each try.

    >>> [refused_without_lookup(h) for h in ("10.0.0.1", "::1", "localhost.", "example.com")]
    [True, True, True, False]
    """
    name = host.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return refused_address(host)
    except ValueError:
        pass
    try:
        # The forms `inet_aton` takes (``127.1``, ``0x7f.1``, ``2130706433``) are what the
        # resolver takes as an IPv4 address without asking DNS.
        return refused_address(socket.inet_ntoa(socket.inet_aton(name)))
    except (OSError, ValueError):
        return False


def signature(secret: str, timestamp: int, body: str) -> str:
    """The ``Emit-Signature`` header: ``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"
