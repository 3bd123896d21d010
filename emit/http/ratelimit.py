"""A token bucket per key, on trio's clock: ``rate`` requests a second, bursts up to
``burst``. Pure bookkeeping with ``now`` passed in, so it is tested without waiting."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class RateLimiter:
    rate: float
    burst: float
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.rate > 0 or not self.burst >= 1:
            raise ValueError("rate must be > 0 and burst >= 1")

    def take(self, key: str, now: float) -> float:
        """Take one token: 0.0 if allowed, else the seconds until one is available."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
            if len(self._buckets) > 100_000:  # forget idle keys rather than grow forever
                self._forget_idle(now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.rate
        for key in [k for k, b in self._buckets.items() if now - b.at > full_after]:
            del self._buckets[key]
