"""A token bucket per key, on trio's clock: ``rate`` requests a second, bursts up to
``burst``. Pure bookkeeping with ``now`` passed in, so it is tested without waiting."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    full_at: float = 0.0
    """When it will be full again: forgotten after that, it is the same as a new one."""


@dataclass(slots=True)
class RateLimiter:
    rate: float
    burst: float
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.rate > 0 or not self.burst >= 1:
            raise ValueError("rate must be > 0 and burst >= 1")

    def take(self, key: str, now: float, rate: float | None = None) -> float:
        """Take one token: 0.0 if allowed, else the seconds until one is available.
        ``rate``: this key's own rate (its space's setting), with bursts of one second's
        worth (at least one request); None: the limiter's."""
        if rate is None:
            rate, burst = self.rate, self.burst
        else:
            burst = max(1.0, rate)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(burst, now)
            if len(self._buckets) > 100_000:  # forget idle keys rather than grow forever
                self._forget_idle(now)
        else:
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
            bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            bucket.full_at = now + (burst - bucket.tokens) / rate
            return 0.0
        return (1 - bucket.tokens) / rate

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if now >= b.full_at]:
            del self._buckets[key]
