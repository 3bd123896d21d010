"""The HTTP server's settings: a light module, so that ``emit`` can offer them without
importing Quart until a server is actually started."""

from __future__ import annotations

from dataclasses import dataclass

MIN_SECRET = 16
"""Characters the cluster secret must have at least."""


@dataclass(frozen=True, slots=True)
class HttpSettings:
    admin_key: str | None = None
    """The server-wide admin key (spaces and tokens only); None: no admin endpoints."""
    max_body: int = 1024 * 1024
    """Bytes; a larger body is refused with 413."""
    rate: float = 1000.0
    """Requests per second per key (token bucket; bursts up to one second's worth)."""
    key_cache_seconds: float = 1.0
    """How long a looked-up key is trusted before the store is asked again."""
    send_timeout: float = 30.0
    """Seconds one write to a client may take: a client that stops reading (a stalled
    WebSocket, a response nobody reads) is dropped after that, and its socket freed."""
    metrics_token: str | None = None
    """A key that may read ``GET /metrics`` and nothing else (the admin key may too)."""
    cluster_secret: str | None = None
    """The secret nodes of a cluster authenticate their forwarded requests with; None:
    this node forwards nothing and refuses forwarded requests."""

    def __post_init__(self) -> None:
        if self.max_body < 1 or not self.rate > 0 or self.key_cache_seconds < 0:
            raise ValueError("max_body >= 1, rate > 0 and key_cache_seconds >= 0, please")
        if not self.send_timeout > 0:
            raise ValueError("send_timeout > 0, please")
        if self.cluster_secret is not None and len(self.cluster_secret) < MIN_SECRET:
            raise ValueError(f"the cluster secret must have {MIN_SECRET} characters at least")
